#!/usr/bin/env bash
# A real vendor file for the Bio-Formats tests: a Zeiss CZI written by Zeiss's own libCZI, shipped
# (as a C array, MIT licence, "SPDX-FileCopyrightText: 2025 Carl Zeiss Microscopy GmbH") in the
# aicspylibczi 4.0.1 sdist on PyPI: libCZI/Src/libCZIAPI_UnitTests/testdata.cpp,
# czi_with_subblock_of_size_t2 (2,304 bytes: one 1x1 8-bit series of two time points).
# The nd2, readlif and czifile sdists ship no sample file. Fetched hash-checked, never committed.
#   bash scripts/testbed/vendor_sample.sh      # -> .testbed/samples/libczi-t2.czi
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=.testbed/samples/libczi-t2.czi
SDIST_SHA256=4a10a86d71ac7148c02e91163aa1f0225eb80ea0cc71d71ac8e50969e057e559
CZI_SHA256=39f380fdbc8c1be5b59c26ab0ccb32286c51a5d16ef69a7f5fbe1cde299f1b1d
if [ -f "$OUT" ] && [ "$(sha256sum "$OUT" | cut -d' ' -f1)" = "$CZI_SHA256" ]; then
    echo "vendor sample: ready ($OUT)"; exit 0
fi
mkdir -p "$(dirname "$OUT")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "aicspylibczi==4.0.1 --hash=sha256:$SDIST_SHA256" > "$tmp/req.txt"
"$PYTHON" -m pip download -q --no-deps --no-binary :all: --require-hashes -r "$tmp/req.txt" -d "$tmp"
"$PYTHON" - "$tmp/aicspylibczi-4.0.1.tar.gz" "$tmp/out.czi" <<'PY'
import re, sys, tarfile
with tarfile.open(sys.argv[1]) as sdist:
    text = sdist.extractfile("aicspylibczi-4.0.1/libCZI/Src/libCZIAPI_UnitTests/testdata.cpp").read().decode()
body = text[text.index("{", text.index("czi_with_subblock_of_size_t2")) + 1:]
data = bytes(int(h, 16) for h in re.findall(r"0x([0-9A-Fa-f]{2})", body[:body.index("}")]))
open(sys.argv[2], "wb").write(data)
PY
[ "$(sha256sum "$tmp/out.czi" | cut -d' ' -f1)" = "$CZI_SHA256" ] || {
    echo "vendor sample: the CZI extracted from the sdist does not match its pinned hash" >&2; exit 1; }
mv "$tmp/out.czi" "$OUT"
echo "vendor sample: $OUT (Zeiss CZI from libCZI's tests, MIT)"
