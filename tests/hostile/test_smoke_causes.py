"""The smoke run blames the right thing: bad images, memory, the launcher or the macro.

Through the real ``validate`` and the real ImageJ: each project below fails for one cause,
and the error must name that cause's field with a fix (it used to say "fix the macro" for
every one of them). Plus the verdict on JVM lines that cannot be provoked here.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from sciops.errors import ConfigError
from sciops.imaging.synthetic import make_images, nuclei_image
from sciops_node.contract import Manifest

pytestmark = pytest.mark.imagej


def _random_bytes(inp):
    for k in range(3):
        (inp / f"c{k}.tif").write_bytes(os.urandom(5000))


def _empty(inp):
    for k in range(3):
        (inp / f"z{k}.tif").write_bytes(b"")


def _cut_before_its_directory(inp):
    make_images(inp, {"a.tif": 3}, size=256)   # pixels first, the TIFF directory at the end
    (inp / "a.tif").write_bytes((inp / "a.tif").read_bytes()[:3000])


def _cut_in_its_pixels(inp):
    import tifffile

    tifffile.imwrite(inp / "a.tif", nuclei_image(5, size=256))   # directory first, then the pixels
    data = (inp / "a.tif").read_bytes()
    (inp / "a.tif").write_bytes(data[: len(data) // 2])


def _png_named_tif(inp):
    from PIL import Image

    Image.fromarray(nuclei_image(3, size=64).astype(np.uint8)).save(inp / "a.tif", format="PNG")


def _plane_larger_than_the_heap(inp):
    import tifffile

    tifffile.imwrite(inp / "big.tif", shape=(16000, 16000), dtype=np.uint8)   # 244 MB, written sparse


CASES = [
    (_random_bytes, {}, "input", "not an image file"),
    (_empty, {}, "input", "empty file (0 bytes)"),
    (_cut_before_its_directory, {}, "input", "corrupt or cut short"),
    (_cut_in_its_pixels, {}, "input", "truncated: its image data runs to byte"),
    (_png_named_tif, {}, "input", "named .tif but it is a PNG file"),
    (_plane_larger_than_the_heap, {"memory": "512M"}, "memory", "set memory to at least 2G"),
]


@pytest.fixture
def bare_project(storage):
    root = storage / "proj"
    for d in ("input", "src"):
        (root / d).mkdir(parents=True)
    return root


@pytest.mark.parametrize("make,conf,field,words", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_images_are_the_images_fault(imagej, airflow_db, bare_project, make, conf, field, words):
    from sciops.phases import checks

    make(bare_project / "input")
    with pytest.raises(ConfigError) as err:
        checks.validate({"project": "proj", **conf}, "manual__smoke")
    assert err.value.fields == [field], err.value.problems
    message = dict(err.value.problems)[field]
    assert words in message and "Fix:" in message, message
    assert "macro" not in err.value.fields


def test_a_project_with_some_bad_images_still_smoke_tests_the_good_ones(imagej, airflow_db, bare_project, caplog):
    from sciops.phases import checks

    make_images(bare_project / "input", {"b.tif": 3}, size=128)
    (bare_project / "input" / "a.tif").write_bytes(b"")
    info = checks.validate({"project": "proj"}, "manual__smoke")
    assert info.imagej_version.startswith("1.")
    assert "smoke run skips 1 image(s) ImageJ cannot open: a.tif: empty file" in caplog.text


def test_imagej_that_does_not_start_is_the_launchers_fault(imagej, airflow_db, bare_project, tmp_path, monkeypatch):
    from sciops.phases import checks

    make_images(bare_project / "input", {"a.tif": 3}, size=128)
    jar = tmp_path / "ij.jar"
    jar.write_bytes(b"not a jar")
    monkeypatch.setenv("SCIOPS_IJ_JAR", str(jar))
    with pytest.raises(ConfigError) as err:
        checks.validate({"project": "proj"}, "manual__smoke")
    assert err.value.fields == ["launcher"]
    assert "ImageJ did not start" in str(err.value) and "Invalid or corrupt jarfile" in str(err.value)


def test_a_macro_error_is_still_the_macros_fault(imagej, airflow_db, bare_project):
    from sciops.phases import checks

    make_images(bare_project / "input", {"a.tif": 3}, size=128)
    (bare_project / "src" / "bad.ijm").write_text("// @sciops outputs: results.csv\nx = undefinedFunction(3);\n")
    with pytest.raises(ConfigError) as err:
        checks.validate({"project": "proj", "macro": "src/bad.ijm"}, "manual__smoke")
    assert err.value.fields == ["macro"] and "Fix the macro" in str(err.value)


MANIFEST = Manifest(run_dir="/x", work_dir="/x/work", chunks=[], memory_mb=4096, launcher={"kind": "imagej1"})


@pytest.mark.parametrize("log_text,records,field", [
    ("Error occurred during initialization of VM\nCould not reserve enough space for 3276800KB object heap\n", [],
     "memory"),
    ("Invalid maximum heap size: -Xmx99999999m\n", [], "memory"),
    ("Error: Invalid or corrupt jarfile /x/ij.jar\n", [], "launcher"),
    ("SCIOPS_BEGIN\t/in/a.tif\n<Out of memory>\n", [{"image": "a.tif", "error": "ImageJ stalled"}], "memory"),
    ("SCIOPS_BEGIN\t/in/a.tif\n", [{"image": "a.tif", "error": "java.lang.OutOfMemoryError: Java heap space"}],
     "memory"),
    ("SCIOPS_BEGIN\t/in/a.tif\nMacro Error: Undefined identifier\n", [{"image": "a.tif", "error": "Macro Error"}],
     "macro"),
])
def test_smoke_verdict_from_what_the_jvm_said(log_text, records, field):
    from sciops.imaging.imagej import smoke_verdict

    got, message = smoke_verdict(["a.tif"], records, {"error": "JVM exited with code 1"}, log_text, MANIFEST)
    assert got == field, message
    assert len(message) > 40
