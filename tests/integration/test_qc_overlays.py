"""QC overlays (issue 33) with the real ImageJ 1 under Xvfb: the driver draws what the macro measured.

Every ok image gets ``qc.png`` under ``qc_images: all``; its outlines are the objects counted
(yellow outline components == the macro's count on synthetic images, whose nuclei never touch);
a failed image keeps none; a macro that wrote its own ``qc.png`` keeps it; one that leaves no
ROIs but X/Y in its Results gets circles; one that leaves nothing gets the plain image, and says so.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import runner_manifest
import sciops_task as st
from matplotlib.image import imread

from sciops import MACRO_DIR
from sciops.imaging.synthetic import make_images

pytestmark = pytest.mark.imagej


def run_task(tmp_path: Path, launcher: dict, macro: str, images: list[str], **kw) -> dict[str, dict]:
    runner_manifest(tmp_path, launcher, macro, images, **{"expected_outputs": ["*.csv"], "qc_images": "all", **kw})
    assert st.main(["--manifest", str(tmp_path / "manifest.json"), "--task", "1"]) == 0
    return st.read_statuses(st.status_path(str(tmp_path / "work"), 1))


def overlay(tmp_path: Path, image: str) -> Path:
    return Path(st.image_output_dir(str(tmp_path / "work"), image)) / "qc.png"


def outlines(png: Path) -> int:
    """Yellow connected components: the outlines the driver drew (nuclei never touch in these images)."""
    rgb = imread(png)[..., :3]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    yellow = (r > 0.35) & (g > 0.35) & (b < 0.6 * np.minimum(r, g))   # anti-aliased edges too, never grey
    todo, components = set(zip(*np.nonzero(yellow))), 0
    while todo:                     # 8-connected flood fill
        components += 1
        stack = [todo.pop()]
        while stack:
            y, x = stack.pop()
            for n in ((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
                if n in todo:
                    todo.remove(n)
                    stack.append(n)
    return components


def test_every_ok_image_has_an_overlay_whose_outlines_are_the_objects_counted(tmp_path, imagej):
    counts = make_images(tmp_path / "input", {"a.tif": 5, "b.tif": 12, "big.tif": 9}, size=256)
    make_images(tmp_path / "input", {"big.tif": 9}, size=700)      # scaled down to 384 px for its overlay
    (tmp_path / "input" / "broken.tif").write_bytes(b"not a tiff")   # the macro fails on it
    got = run_task(tmp_path, imagej, (MACRO_DIR / "count_nuclei.ijm").read_text(), [*sorted(counts), "broken.tif"])
    assert got["broken.tif"]["status"] == "failed" and not overlay(tmp_path, "broken.tif").exists()
    for name, n in counts.items():
        rec = got[name]
        assert rec["status"] == "ok", rec
        png = overlay(tmp_path, name)
        assert rec["qc"] == f"rois {n}" and rec["qc_seconds"] >= 0
        assert outlines(png) == n, name
        h, w = imread(png).shape[:2]
        assert max(h, w) <= 384 and png.stat().st_size < 100_000


def test_without_the_java_drawer_the_driver_draws_the_same_outlines_with_commands(tmp_path, imagej, monkeypatch):
    """A node whose agent was built without ImageJ's jar (SciopsQc left out): driver.ijm's own commands."""
    from sciops_node import chunk, jvm

    monkeypatch.setattr(chunk, "dialog_agent", lambda java, **kw: jvm.dialog_agent(java, cache_dir=str(tmp_path)))
    counts = make_images(tmp_path / "input", {"a.tif": 5}, size=256)
    counts.update(make_images(tmp_path / "input", {"big.tif": 9}, size=700))
    got = run_task(tmp_path, imagej, (MACRO_DIR / "count_nuclei.ijm").read_text(), sorted(counts))
    for name, n in counts.items():
        assert got[name]["qc"] == f"rois {n}" and outlines(overlay(tmp_path, name)) == n, name
        assert max(imread(overlay(tmp_path, name)).shape[:2]) <= 384


LAB_OWN_QC = """// @sciops outputs: summary.csv
output = ""; lines = split(getArgument(), "\\n");
for (i = 0; i < lines.length; i++) if (startsWith(lines[i], "output=")) output = substring(lines[i], 7);
newImage("mine", "8-bit black", 40, 30, 1);
saveAs("PNG", output + "/qc.png");
f = File.open(output + "/summary.csv"); print(f, "count"); print(f, "1"); File.close(f);
"""

LAB_XY = """// @sciops outputs: results.csv
input = ""; lines = split(getArgument(), "\\n");
for (i = 0; i < lines.length; i++) if (startsWith(lines[i], "input=")) input = substring(lines[i], 6);
open(input);
setResult("X", 0, 20); setResult("Y", 0, 30); setResult("X", 1, 100); setResult("Y", 1, 90); updateResults();
"""

LAB_NOTHING = """// @sciops outputs: summary.csv
output = ""; lines = split(getArgument(), "\\n");
for (i = 0; i < lines.length; i++) if (startsWith(lines[i], "output=")) output = substring(lines[i], 7);
f = File.open(output + "/summary.csv"); print(f, "count"); print(f, "3"); File.close(f);
"""


@pytest.mark.parametrize("macro, drawn, marks", [(LAB_OWN_QC, "own", None), (LAB_XY, "xy 2", 2),
                                                 (LAB_NOTHING, "plain", 0)], ids=["own-qc-png", "results-xy", "nothing"])
def test_lab_macros_own_overlay_results_xy_or_nothing(tmp_path, imagej, macro, drawn, marks):
    make_images(tmp_path / "input", {"a.tif": 3}, size=128)
    rec = run_task(tmp_path, imagej, macro, ["a.tif"])["a.tif"]
    assert rec["status"] == "ok" and rec["qc"] == drawn
    png = overlay(tmp_path, "a.tif")
    if drawn == "own":
        assert imread(png).shape[:2] == (30, 40)     # the macro's, not replaced
    else:
        assert outlines(png) == marks


def test_sample_draws_the_fixed_sample_and_the_unusual_none_draws_nothing(tmp_path, imagej):
    from sciops_node import qc

    names = {f"img{i:02d}.tif": 6 for i in range(12)}
    names["img05.tif"] = 0                      # no nuclei among images that have some: unusual
    make_images(tmp_path / "input", names, size=128)
    got = run_task(tmp_path, imagej, (MACRO_DIR / "count_nuclei.ijm").read_text(), sorted(names), qc_images="sample")
    drawn = {n for n, rec in got.items() if rec.get("qc")}
    expected = {"img05.tif"} | {n for n in names if qc.sampled(n)}   # the odd one, and the fixed sample
    assert drawn == expected and all(overlay(tmp_path, n).exists() == (n in drawn) for n in names)
    none = tmp_path / "none"
    make_images(none / "input", {"a.tif": 2}, size=64)
    rec = run_task(none, imagej, (MACRO_DIR / "count_nuclei.ijm").read_text(), ["a.tif"], qc_images="none")["a.tif"]
    assert rec["status"] == "ok" and "qc" not in rec and not overlay(none, "a.tif").exists()
