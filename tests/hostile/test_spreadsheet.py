"""Spreadsheet formula injection and shifted columns (issue 36, item 7), through the real runner and ImageJ.

Images whose names begin with ``=``, ``+``, ``-``, ``@`` and a macro that writes such text (and a
comma inside a quoted text value) are run by the real task runner under ImageJ 1, then collated:
every text cell of results.csv, summary.csv and failures.csv that a spreadsheet would run as a
formula begins with a single quote, numbers such as ``-1.5`` stay numbers, the comma stays inside
its column, and results.parquet keeps the values as the macro wrote them. A row with an unquoted
extra comma fails its image with the line named, never shifted into the next column.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import runner_manifest
import sciops_task as st

from sciops.imaging.synthetic import make_images
from sciops.reporting.cells import neutral, plain
from sciops.reporting.collate import collate

pytestmark = pytest.mark.imagej

MACRO = r"""// @sciops outputs: results.csv
lines = split(getArgument(), "\n");
output = "";
for (i = 0; i < lines.length; i++) if (startsWith(lines[i], "output=")) output = substring(lines[i], 7);
input = ""; for (i = 0; i < lines.length; i++) if (startsWith(lines[i], "input=")) input = substring(lines[i], 6);
f = File.open(output + "/results.csv");
print(f, "label,note,value,formula,tabbed");
if (indexOf(input, "shift") >= 0) print(f, "=1+1,a,b,-1.5,@SUM(A1),x");
else print(f, "=1+1,\"a, b\",-1.5,@SUM(A1:A9),\tx");
File.close(f);
g = File.open(output + "/summary.csv");
print(g, "n,comment");
print(g, "-3,+cmd|' /C calc'!A0");
File.close(g);
"""
NAMES = ["=HYPERLINK(x).tif", "+plus.tif", "-minus.tif", "@at.tif", "plain.tif", "shift.tif"]
TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def test_collated_tables_hold_no_formula(tmp_path, imagej):
    make_images(tmp_path / "input", {name: 2 for name in NAMES}, size=64)
    path = runner_manifest(tmp_path, imagej, MACRO, NAMES)
    st.main(["--manifest", str(path), "--task", "1"])
    c = collate(tmp_path, json.loads(path.read_text()))
    assert (c.images, c.ok, c.failed) == (6, 5, 1)

    results, summary, failures = (_rows(tmp_path / n) for n in ("results.csv", "summary.csv", "failures.csv"))
    for table in (results, summary, failures):
        for row in table:
            for key, cell in row.items():
                assert not cell.startswith(TRIGGERS) or _number(cell), (key, cell)
    by_image = {plain(r["image"]): r for r in results}
    assert set(by_image) == set(NAMES) - {"shift.tif"}
    row = by_image["=HYPERLINK(x).tif"]
    assert row["image"] == "'=HYPERLINK(x).tif"
    assert (row["label"], row["note"], row["value"], row["formula"], row["tabbed"]) == \
        ("'=1+1", "a, b", "-1.5", "'@SUM(A1:A9)", "'\tx")   # the comma stayed in its column; -1.5 a number
    assert {r["comment"] for r in summary} == {"'+cmd|' /C calc'!A0"} and {r["n"] for r in summary} == {"-3"}
    assert [plain(r["image"]) for r in failures] == ["shift.tif"]
    assert "field" in failures[0]["error"]   # the strict reader names the row that does not fit its header
    # parquet keeps what the macro wrote (no spreadsheet opens it)
    raw = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert {r["label"] for r in raw} == {"=1+1"} and "=HYPERLINK(x).tif" in {r["image"] for r in raw}


@pytest.mark.parametrize("value,expected", [
    ("=1+1", "'=1+1"), ("+x", "'+x"), ("-x", "'-x"), ("@x", "'@x"), ("\t=x", "'\t=x"), ("\rx", "'\rx"),
    ("'=x", "''=x"), ("-1.5", "-1.5"), ("+3", "+3"), ("-2e-3", "-2e-3"), ("a=b", "a=b"), ("", ""), (7, 7),
])
def test_neutral_is_reversible(value, expected):
    assert neutral(value) == expected and plain(neutral(value)) == value
