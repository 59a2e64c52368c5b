"""Lab macros as scientists write them, run unchanged through fiji_project (local backend, real ImageJ).

* a Fiji-style macro with ``#@`` script parameters that leaves its counts in Analyze Particles'
  Summary table (the driver keeps it as summary.csv);
* a macro that splits a positional ``getArgument()`` string (``macro_argument``), leaves its
  measurements in the Results table (kept as results.csv) and prints its count to the log (kept
  as log.txt, and its ``name: number`` line as summary.csv);
* a macro that opens a dialog is refused by validate with its line, before anything runs.
"""
from __future__ import annotations

import pandas as pd
import pytest

from helpers import fresh_dag, task_states

pytestmark = pytest.mark.imagej

COUNTS = {"a.tif": 3, "b.tif": 5, "sub/c.tif": 8}

FIJI_PARAMS = """#@ File input
#@ File (style="directory") output
#@ int (label="Smallest nucleus (px)", value=30) minSize
#@ String (choices={"Otsu", "Li"}, value="Otsu") method
// written for Fiji's script editor: no getArgument(), no saveAs
open(input);
run("8-bit");
setAutoThreshold(method + " dark");
setOption("BlackBackground", true);
run("Convert to Mask");
run("Watershed");
run("Analyze Particles...", "size=" + minSize + "-Infinity summarize");
"""

POSITIONAL = """// usage: runMacro("count.ijm", "<image>,<output folder>,<smallest size>")
args = split(getArgument(), ",");
open(args[0]);
minSize = parseInt(args[2]);
run("8-bit");
setAutoThreshold("Otsu dark");
setOption("BlackBackground", true);
run("Convert to Mask");
run("Watershed");
run("Set Measurements...", "area centroid decimal=3");
run("Analyze Particles...", "size=" + minSize + "-Infinity display clear");
print("nuclei: " + nResults);
print("done with " + File.getName(args[0]));
"""


def run(conf):
    from airflow.utils.state import DagRunState

    dr = fresh_dag().test(run_conf=conf)
    return dr, dr.state == DagRunState.SUCCESS


def only_run(root):
    runs = [p for p in (root / "output").iterdir() if (p / "run.json").exists()]
    assert len(runs) == 1, runs
    return runs[0]


def test_a_fiji_macro_with_script_parameters_runs_unchanged(airflow_db, make_project):
    root = make_project("labfiji", counts=COUNTS, size=192)
    (root / "src" / "fiji_count.ijm").write_text(FIJI_PARAMS)
    dr, ok = run({"project": "labfiji", "macro": "src/fiji_count.ijm", "macro_args": {"minSize": 20},
                  "images_per_task": 2, "memory": "1G", "slots": 2})
    assert ok, task_states(dr)
    run_dir = only_run(root)
    summary = pd.read_csv(run_dir / "summary.csv").set_index("image")
    assert summary["Count"].astype(int).to_dict() == COUNTS
    assert not (run_dir / "failures.csv").exists() or pd.read_csv(run_dir / "failures.csv").empty
    staged = (run_dir / "work" / "job" / "fiji_count.headless.ijm").read_text().split("\n")
    assert staged[2].startswith('minSize = parseFloat(sciopsParam_("minSize", "30"));')
    assert (run_dir / "work" / "job" / "fiji_count.ijm").read_text() == FIJI_PARAMS   # what the hash covers


def test_a_positional_argument_macro_with_results_left_open_and_a_printed_count(airflow_db, make_project):
    root = make_project("labpos", counts=COUNTS, size=192)
    (root / "src" / "count.ijm").write_text(POSITIONAL)
    dr, ok = run({"project": "labpos", "macro": "src/count.ijm", "macro_argument": "{input},{output},{min}",
                  "macro_args": {"min": 20}, "images_per_task": 3, "memory": "1G", "slots": 2})
    assert ok, task_states(dr)
    run_dir = only_run(root)
    summary = pd.read_csv(run_dir / "summary.csv").set_index("image")
    assert summary["nuclei"].astype(int).to_dict() == COUNTS            # from the printed "nuclei: N"
    results = pd.read_csv(run_dir / "results.csv")
    assert results.groupby("image").size().to_dict() == COUNTS          # the Results table left open
    assert {"Area", "X", "Y"} <= set(results.columns)
    log = (run_dir / "work" / "images" / "sub" / "c.tif" / "log.txt")
    # all the image's output: batch-mode ImageJ also writes the displayed Results table there
    assert log.read_text().splitlines()[-2:] == ["nuclei: 8", "done with c.tif"]


def test_a_macro_that_opens_a_dialog_is_refused_with_its_line(airflow_db, make_project):
    from sciops.errors import ConfigError
    from sciops.phases.checks import check

    root = make_project("labdialog", counts={"a.tif": 3})
    (root / "src" / "ask.ijm").write_text('// asks first\nopen(getArgument());\n'
                                         'sigma = getNumber("Sigma?", 2); // was a dialog\nrun("Measure");\n')
    with pytest.raises(ConfigError) as err:
        check({"project": "labdialog", "macro": "src/ask.ijm"})
    message = str(err.value)
    assert "src/ask.ijm line 3: getNumber(...)" in message and "macro argument" in message
    dr, ok = run({"project": "labdialog", "macro": "src/ask.ijm"})
    assert not ok
    states = task_states(dr)
    assert states["validate"] == "failed" and states["run_array"] == "upstream_failed"
    from sciops.accounting import ledger
    from sciops.run.project import safe_run_id

    row = next(r for r in ledger.rows(project="labdialog") if r["run_id"] == safe_run_id(dr.run_id))
    assert row["status"] == "refused" and "line 3: getNumber(...)" in row["reason"]
