"""sciops_node.units: what one image must leave behind."""
from __future__ import annotations

import pytest

from sciops_node import units


def test_outputs_missing(tmp_path):
    (tmp_path / "results.csv").write_text("x")
    assert units.outputs_missing(str(tmp_path), ["results.csv", "summary.csv"]) == ["summary.csv"]
    assert units.outputs_missing(str(tmp_path), ["*.csv"]) == []
    assert units.outputs_missing(str(tmp_path / "nope"), ["*.csv"]) == ["*.csv"]


# -- the tables an image leaves: read strictly, never padded (issue 35) --------------------------------

def _table(tmp_path, text, name="results.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode())
    return str(path)


def test_a_whole_table_is_read_with_imagejs_row_number_column_dropped(tmp_path):
    text = ' ,Label,Area\n1,"cell, 1",100\n\n2,"two\nlines",3\n'
    assert units.read_csv_rows(_table(tmp_path, text)) == (["Label", "Area"], [["cell, 1", "100"],
                                                                               ["two\nlines", "3"]])
    assert units.read_csv_rows(str(tmp_path / "none.csv")) == ([], [])
    assert units.read_csv_rows(_table(tmp_path, "")) == ([], [])
    assert units.read_csv_rows(_table(tmp_path, "count\n")) == (["count"], [])


@pytest.mark.parametrize("text, words", [
    (" ,Area,Mean,X\n1,100,2,3\n102,2\n", "line 3 has 2 field(s), its header 4 (cut off?)"),   # a cut-off last row
    ("Label,Area\n\"cell 1\",100\n\"ce", "ends inside a quoted field"),                     # cut inside its quotes
    ("Label,Area\n\"ce\nll\",100\n\"cell 2,7\n", "ends inside a quoted field"),
    ("A,B\n1,2,3\n", "line 2 has 3 field(s), its header 2 (not a row of this table)"),
    ('A,B\n"x"y,2\n', "not well-formed CSV at line 2"),
])
def test_a_half_written_table_is_refused_with_the_reason(tmp_path, text, words):
    with pytest.raises(units.TableError) as err:
        units.read_csv_rows(_table(tmp_path, text))
    assert words in str(err.value) and str(err.value).startswith("results.csv ")


def _outputs(tmp_path, **files):
    for name, text in files.items():
        (tmp_path / name.replace("_", ".")).write_text(text)
    return str(tmp_path)


def test_a_required_results_table_with_no_rows_needs_a_summary_count_of_zero(tmp_path):
    both = ["results.csv", "summary.csv"]
    out = _outputs(tmp_path, results_csv=" ,Area,Mean\n", summary_csv="count,mean_area\n0,NaN\n")
    assert units.image_tables(out, both) == ((["Area", "Mean"], []), (["count", "mean_area"], [["0", "NaN"]]))
    assert units.image_tables(out, ["*.csv"])[0] == (["Area", "Mean"], [])
    (tmp_path / "results.csv").write_text("")                       # ImageJ writes no file for an empty table
    assert units.image_tables(out, both)[0] == ([], [])
    (tmp_path / "summary.csv").write_text("Slice,Count,Total Area\nimg,0,0\n")   # ImageJ's own Summary table
    assert units.image_tables(out, both)[0] == ([], [])
    for summary, words in (("count,mean_area\n3,NaN\n", "results.csv has no rows, but the summary says count 3"),
                           ("mean_area\nNaN\n", "no summary count of 0"),
                           ("count_dapi,count_marker\n0,2\n", "count_dapi 0, count_marker 2")):
        (tmp_path / "summary.csv").write_text(summary)
        with pytest.raises(units.TableError, match=words):
            units.image_tables(out, both)
    (tmp_path / "summary.csv").unlink()
    with pytest.raises(units.TableError, match="no summary count of 0"):
        units.image_tables(out, ["results.csv"])
    assert units.image_tables(out, ["summary.csv"]) == (([], []), ([], []))   # not required: no rows is no rows


def test_a_required_summary_must_have_its_row(tmp_path):
    out = _outputs(tmp_path, results_csv="A\n1\n", summary_csv="count,mean_area\n")
    with pytest.raises(units.TableError, match="summary.csv has a header and no row"):
        units.image_tables(out, ["results.csv", "summary.csv"])
    assert units.image_tables(out, ["results.csv"]) == ((["A"], [["1"]]), (["count", "mean_area"], []))
    (tmp_path / "summary.csv").write_text("")
    with pytest.raises(units.TableError, match="summary.csv has no header and no row"):
        units.image_tables(out, ["*.csv"])
