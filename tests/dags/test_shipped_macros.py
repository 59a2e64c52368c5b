"""The shipped analysis macros on generated images with exact answers, through fiji_project (local
backend, real ImageJ): percent_positive (channel files and a two-channel stack), cell_death, ki67_dab."""
from __future__ import annotations

import pandas as pd
import pytest

from helpers import fresh_dag, task_states

pytestmark = pytest.mark.imagej

# stem: (nuclei, positive); an image without positives must give 0, not half of them
MARKER = {"A01": (9, 4), "A02": (12, 0), "plate2/B07": (7, 6)}


def run(conf):
    from airflow.utils.state import DagRunState

    dr = fresh_dag().test(run_conf={"memory": "1G", "slots": 2, "images_per_task": 2, **conf})
    assert dr.state == DagRunState.SUCCESS, task_states(dr)
    return dr


def collated(root):
    runs = [p for p in (root / "output").iterdir() if (p / "summary.csv").exists()]
    assert len(runs) == 1, runs
    failures = runs[0] / "failures.csv"
    assert not failures.exists() or pd.read_csv(failures).empty, failures.read_text()
    return pd.read_csv(runs[0] / "summary.csv").set_index("image"), pd.read_csv(runs[0] / "results.csv")


def test_percent_positive_on_channel_files(airflow_db, make_project):
    from sciops.imaging.synthetic import make_marker_pairs

    root = make_project("pp", counts={})
    make_marker_pairs(root / "input", MARKER, size=192)
    run({"project": "pp", "macro": "percent_positive", "file_pattern": "*_d0.tif"})
    summary, results = collated(root)
    want = {f"{stem}_d0.tif": v for stem, v in MARKER.items()}
    assert summary[["nuclei", "positive"]].astype(int).apply(tuple, axis=1).to_dict() == want
    assert summary.loc["A01_d0.tif", "fraction_positive"] == pytest.approx(4 / 9, abs=1e-4)
    assert summary.loc["A01_d0.tif", "marker_file"] == "A01_d1.tif"
    assert pd.isna(summary.loc["A02_d0.tif", "marker_threshold"])       # one class: none positive
    assert results.groupby("image")["positive"].sum().astype(int).to_dict() == {k: v[1] for k, v in want.items()}


def test_percent_positive_on_two_channel_stacks_and_named_channels(airflow_db, make_project):
    from sciops.imaging.synthetic import make_marker_pairs

    root = make_project("ppstack", counts={})
    make_marker_pairs(root / "input", {"s1": (10, 3), "s2": (6, 2)}, size=192, stack=True)
    run({"project": "ppstack", "macro": "percent_positive"})
    summary, _ = collated(root)
    assert summary[["nuclei", "positive"]].astype(int).apply(tuple, axis=1).to_dict() == {"s1.tif": (10, 3),
                                                                                        "s2.tif": (6, 2)}


def test_cell_death_counts_dead_and_live(airflow_db, make_project):
    from sciops.imaging.synthetic import make_marker_pairs

    root = make_project("death", counts={})
    make_marker_pairs(root / "input", {"w1": (11, 5), "w2": (8, 1)}, size=192, suffixes=("Hoechst", "PI"))
    run({"project": "death", "macro": "cell_death", "file_pattern": "*_Hoechst.tif",
         "macro_args": {"nuclei_suffix": "Hoechst", "marker_suffix": "PI"}})
    summary, results = collated(root)
    assert summary[["nuclei", "dead", "live"]].astype(int).apply(tuple, axis=1).to_dict() == {
        "w1_Hoechst.tif": (11, 5, 6), "w2_Hoechst.tif": (8, 1, 7)}
    assert summary.loc["w1_Hoechst.tif", "dead_fraction"] == pytest.approx(5 / 11, abs=1e-4)
    assert "dead" in results.columns and int(results["dead"].sum()) == 6


def test_ki67_dab_index_on_brightfield(airflow_db, make_project):
    from sciops.imaging.synthetic import make_dab_images

    root = make_project("dab", counts={})
    specs = {"core1.tif": (10, 4), "core2.tif": (9, 0), "core3.tif": (8, 8)}
    make_dab_images(root / "input", specs, size=192)
    run({"project": "dab", "macro": "ki67_dab"})
    summary, _ = collated(root)
    assert summary[["nuclei", "positive"]].astype(int).apply(tuple, axis=1).to_dict() == specs
    assert summary.loc["core1.tif", "ki67_index"] == pytest.approx(0.4)
