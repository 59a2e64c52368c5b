"""The results section of report.html (issue 33) from a real run, in a real browser.

A synthetic 96-well plate (one image a well, named like a plate reader's ``r03c07``) runs through
fiji_project (local backend, real ImageJ, the shipped count_nuclei): well C07 has four times the
nuclei of the others (the planted outlier well) and well F02's nuclei are each four small specks
(deliberately fragmented: counted as four, within the plate's range, so only the fragmenting
check can catch it). Headless Chromium opens report.html: the outlier well is marked on the
heatmap, the fragmented image is in the gallery with its overlay, the fragmenting warning is shown
(also in run.json); screenshots are kept as artifacts.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import fresh_dag, task_states
from sciops.imaging.synthetic import nuclei_image, write_tiff

pytestmark = pytest.mark.imagej

OUTLIER, FRAGMENTED = "C07", "F02"


def speckled(count: int, size: int = 96, seed: int = 0) -> np.ndarray:
    """``count`` nuclei, each four specks 6 px apart (a textured nucleus a rough threshold breaks up)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(12, 3, (size, size))
    for k in range(count):
        cy, cx = 14 + (k // 3) * 26, 14 + (k % 3) * 26
        for dy, dx in ((0, 0), (0, 6), (6, 0), (6, 6)):
            img[cy + dy - 1:cy + dy + 2, cx + dx - 1:cx + dx + 2] = 200
    return np.clip(img, 0, 255)


def plate_project(root) -> dict[str, int]:
    counts = {}
    for r, row in enumerate("ABCDEFGH", start=1):
        for c in range(1, 13):
            well, name = f"{row}{c:02d}", f"r{r:02d}c{c:02d}f01.tif"
            n = 16 if well == OUTLIER else 1 if well == FRAGMENTED else 3 + (r * c) % 3
            img = speckled(n, seed=r * 13 + c) if well == FRAGMENTED else nuclei_image(n, size=96, radius=5,
                                                                                         seed=r * 13 + c)
            write_tiff(root / "input" / name, img)
            counts[name] = n
    return counts


def test_plate_outlier_well_fragmented_image_and_warning_in_a_real_browser(airflow_db, make_project, request,
                                                                              screenshot):
    from airflow.utils.state import DagRunState

    root = make_project("plate", counts={})
    counts = plate_project(root)
    dr = fresh_dag().test(run_conf={"project": "plate", "qc_images": "all", "memory": "1G", "slots": 2})
    assert dr.state == DagRunState.SUCCESS, task_states(dr)
    run_dir = next(p for p in (root / "output").iterdir() if (p / "run.json").exists())
    doc = json.loads((run_dir / "run.json").read_text())
    fragmented = "r06c02f01.tif"
    results = doc["results"]
    assert results["key"] == "count" and results["plate"]["format"] == 96
    assert results["plate"]["outlier_wells"] == [OUTLIER]
    assert any(w["check"] == "fragmenting" and fragmented in w["images"] for w in results["warnings"])
    summary = pd.read_csv(run_dir / "summary.csv").set_index("image")
    assert (summary["qc_overlay"].str.len() > 0).all() and doc["qc_overlays"]["overlays"] == len(counts)
    assert summary.loc[fragmented, "count"] == 4 * counts[fragmented]      # it did fragment: 4 specks a nucleus
    browser = request.getfixturevalue("browser")   # after the run: Playwright's loop breaks dag.test's triggers
    page = browser.new_page(viewport={"width": 1100, "height": 1600})
    page.goto((run_dir / "report.html").as_uri())
    assert page.locator("body").get_attribute("data-rendered") == "yes"
    assert page.locator("#qc-warnings li[data-check=fragmenting]").is_visible()
    well = page.locator(f'#plate rect.well.outlier[data-well="{OUTLIER}"]')
    assert well.count() == 1 and page.locator("#plate rect.well.outlier").count() == 1
    assert "outlier" in well.locator("title").text_content()
    card = page.locator(f'#gallery figure[data-image="{fragmented}"]')   # an outlier by mean_area too
    assert card.count() == 1 and card.get_attribute("data-overlay") == "yes"
    img = card.locator("img")
    assert img.evaluate("i => i.complete && i.naturalWidth") == 96      # the overlay decoded in the page
    screenshot(page, "results-plate")
    img.click()
    assert page.locator("#lightbox").is_visible()
    screenshot(page, "results-enlarged")
    page.close()
