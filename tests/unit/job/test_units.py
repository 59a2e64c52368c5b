"""sciops_node.units: what one image must leave behind."""
from __future__ import annotations

from sciops_node import units


def test_outputs_missing(tmp_path):
    (tmp_path / "results.csv").write_text("x")
    assert units.outputs_missing(str(tmp_path), ["results.csv", "summary.csv"]) == ["summary.csv"]
    assert units.outputs_missing(str(tmp_path), ["*.csv"]) == []
    assert units.outputs_missing(str(tmp_path / "nope"), ["*.csv"]) == ["*.csv"]
