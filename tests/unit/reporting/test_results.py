"""The results section (issue 33): measures, outliers, sanity warnings and plate views from a collated run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sciops.reporting import plate, results


@pytest.mark.parametrize("name, well", [
    ("plate1/r02c05f01p01-ch1.tiff", (2, 5)), ("Well B03_field2.tif", (2, 3)), ("well_b3.tif", (2, 3)),
    ("scan_H12_s3.tif", (8, 12)), ("P24.tif", (16, 24)), ("x/AF48_w1.tif", (32, 48)), ("A1.tif", (1, 1)),
    ("CPvalid1_340_40x_Tiles_p0002DAPI.TIF", None), ("cells.tif", None), ("B123.tif", None), ("Z48.tif", (26, 48)),
    ("A01B.tif", None)])
def test_well_positions_from_image_names(name, well):
    assert plate.well_of(name) == well


def plate_summary(rows: int = 8, cols: int = 12, fields: int = 2, outlier: str = "C07") -> pd.DataFrame:
    rng = np.random.default_rng(1)
    out = []
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            well = f"{plate.row_name(r)}{c:02d}"
            for f in range(fields):
                n = 200 if well == outlier else int(rng.normal(50, 4))
                out.append({"image": f"plate/{well}_f{f}.tif", "seconds": 0.1, "n_results": n, "count": n,
                            "mean_area": float(rng.normal(80, 3))})
    return pd.DataFrame(out)


def test_a_96_well_plate_marks_its_outlier_well():
    p = plate.plate_of(plate_summary(), "count")
    assert (p["format"], p["rows"], p["columns"], len(p["wells"])) == (96, 8, 12, 96)
    assert p["outlier_wells"] == ["C07"] and p["wells"]["C07"] == {"value": 200.0, "fields": 2, "outlier": True}
    svg = plate.heatmap_svg(p)
    assert svg.count('class="well') == 96 and svg.count('class="well outlier"') == 1
    assert 'data-well="C07"' in svg and "<title>C07: count 200.0 (2 image(s)) — outlier</title>" in svg


def test_384_and_1536_formats_and_no_plate_without_wells():
    assert plate.plate_of(plate_summary(16, 24, 1), "count")["format"] == 384
    big = plate.plate_of(plate_summary(32, 48, 1, outlier="AE40"), "count")
    assert big["format"] == 1536 and big["outlier_wells"] == ["AE40"]
    assert len(plate.heatmap_svg(big)) < 400_000
    assert plate.plate_of(pd.DataFrame({"image": ["a.tif", "b.tif"], "count": [1, 2]}), "count") is None


def write_run(tmp_path, summary: pd.DataFrame, failures: list[dict] | None = None, objects: pd.DataFrame | None = None):
    summary.to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame(failures or [], columns=["image", "task", "attempt", "status", "error"]).to_csv(
        tmp_path / "failures.csv", index=False)
    if objects is not None:
        objects.to_parquet(tmp_path / "results.parquet")
    return results.analyse(tmp_path)


def test_outliers_zero_counts_and_failed_images_are_listed(tmp_path):
    s = plate_summary()
    s.loc[5, ["count", "n_results"]] = 0
    got = write_run(tmp_path, s, [{"image": "plate/H12_f9.tif", "task": 1, "attempt": 3, "status": "failed",
                                   "error": "out of memory"}])
    assert got["key"] == "count" and set(got["measures"]) == {"count", "mean_area"}
    st = got["measures"]["count"]
    assert 45 <= st["median"] <= 55 and st["zeros"] == 1 and st["q1"] <= st["median"] <= st["q3"]
    by_image = {o["image"]: o for o in got["outliers"]}
    assert {"plate/C07_f0.tif", "plate/C07_f1.tif", s.loc[5, "image"], "plate/H12_f9.tif"} <= set(by_image)
    assert by_image["plate/C07_f0.tif"]["measure"] == "count" and by_image["plate/C07_f0.tif"]["z"] > 10
    assert by_image["plate/H12_f9.tif"]["why"] == "failed: out of memory" and got["outliers"][-1]["measure"] is None
    assert got["plate"]["outlier_wells"] == ["A03", "C07"]        # A03: one of its two fields has none


def test_sanity_warnings_fragmenting_debris_empty_and_bimodal(tmp_path):
    rng = np.random.default_rng(2)
    names = [f"img{i:03d}.tif" for i in range(40)]
    counts = [int(rng.normal(40, 3)) for _ in names]
    counts[3] = 5                                    # debris steering the threshold: 5 where 40
    counts[10:14] = [0, 0, 0, 0]                     # 10 % empty
    objects = []
    for name, n in zip(names, counts):
        for k in range(n):
            objects.append({"image": name, "Area": 100 + rng.normal(0, 5), "Mean": 50 + rng.normal(0, 2)})
    objects += [{"image": "img003.tif", "Area": 30, "Mean": 250.0}]           # the bright speck
    objects += [{"image": "img020.tif", "Area": 8.0, "Mean": 50.0} for _ in range(60)]   # shattered into pieces
    got = write_run(tmp_path, pd.DataFrame({"image": names, "count": counts, "seconds": 0.1}),
                    objects=pd.DataFrame(objects))
    checks = {w["check"]: w for w in got["warnings"]}
    assert set(checks) == {"fragmenting", "debris", "empty"}
    assert checks["fragmenting"]["images"][0] == "img020.tif" and checks["debris"]["images"] == ["img003.tif"]
    assert "4 of 40 images" in checks["empty"]["says"]
    two = [10 + int(rng.normal(0, 1)) for _ in range(20)] + [60 + int(rng.normal(0, 2)) for _ in range(20)]
    (tmp_path / "two").mkdir()
    got = write_run(tmp_path / "two", pd.DataFrame({"image": names, "count": two, "seconds": 0.1}))
    assert [w["check"] for w in got["warnings"]] == ["bimodal"]
    assert results.bimodal(np.array([float(c) for c in counts[20:]])) is None


def test_a_macro_without_summary_columns_is_measured_by_its_objects(tmp_path):
    got = write_run(tmp_path, pd.DataFrame({"image": ["a.tif", "b.tif"], "seconds": [1, 2], "n_results": [3, 4],
                                            "qc_overlay": ["work/images/a.tif/qc.png", ""]}))
    assert got["key"] == "n_results" and got["overlays"] == 1 and got["plate"] is None and got["warnings"] == []


def test_the_report_says_when_a_macro_left_nothing_to_outline_and_lists_failed_images(tmp_path):
    from sciops.reporting import results_html

    png = tmp_path / "work" / "images" / "a.tif" / "qc.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    got = write_run(tmp_path, pd.DataFrame({"image": ["a.tif", "b.tif"], "seconds": [1, 1], "count": [3, 4],
                                            "qc_overlay": ["work/images/a.tif/qc.png", ""],
                                            "qc_drawn": ["plain", ""]}),
                    [{"image": "c.tif", "task": 1, "attempt": 1, "status": "failed", "error": "out of memory"}])
    html = results_html.section(tmp_path, got)
    assert 'id="qc-plain">1 overlay(s) show the image without outlines' in html
    assert "no outlines: the macro left no ROIs and no X/Y" in html
    assert 'data-image="c.tif" data-overlay="no"><div class="noqc">no overlay: the image failed' in html
    assert "failed: out of memory" in html
