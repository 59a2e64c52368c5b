"""Units of work from what Bio-Formats reads (sciops.imaging.bioformats), and the tables' unit columns."""
from __future__ import annotations

import pyarrow as pa
import pytest

from sciops.imaging import bioformats as bf
from sciops.reporting.collate import with_unit_columns


def series(i, name, x=512, y=512, c=2, z=1, t=1, type_="uint16"):
    return {"index": i, "name": name, "x": x, "y": y, "c": c, "z": z, "t": t, "type": type_}


PLATE = {"series": [series(0, "Well A1"), series(1, "Well A2"), series(2, "Well B1"), series(3, "Well B2")]}
SLIDE = {"series": [series(0, "slide", 4096, 3072), series(1, "slide #2", 2048, 1536), series(2, "slide #3", 1024, 768),
                    series(3, "label", 600, 400, c=3, type_="uint8")]}


@pytest.mark.parametrize("rel,yes", [("a.tif", False), ("a.TIFF", False), ("x/a.png", False), ("a.ome.tif", True),
                                     ("a.OME.TIFF", True), ("a.czi", True), ("a.nd2", True), ("a.lif", True)])
def test_which_files_are_read_through_bioformats(rel, yes):
    assert bf.needs_bioformats(rel) is yes


def test_unit_names_parse_back():
    assert bf.unit_parts("p/plate.czi#3") == ("p/plate.czi", 3, None)
    assert bf.unit_parts("plate.czi#0c2") == ("plate.czi", 0, 2)
    assert bf.unit_parts("a.tif") == ("a.tif", None, None)
    assert bf.unit_parts("odd#name.tif") == ("odd#name.tif", None, None)


def test_a_pyramids_lower_levels_are_not_units_and_equal_wells_never_merge():
    assert [s["name"] for s in bf.full_resolutions(SLIDE["series"])] == ["slide", "label"]
    assert bf.full_resolutions(SLIDE["series"])[0]["levels"] == 3
    assert len(bf.full_resolutions(PLATE["series"])) == 4


def test_series_and_channel_selection():
    probed = {"plate.czi": PLATE, "slide.czi": SLIDE}
    units, bad, big, names = bf.expand(["a.tif", "plate.czi", "slide.czi"], probed, "all", "all", 4000)
    assert units == ["a.tif", "plate.czi#0", "plate.czi#1", "plate.czi#2", "plate.czi#3", "slide.czi#0",
                     "slide.czi#3"]
    assert names["plate.czi#2"] == "Well B1" and not bad and not big
    assert bf.expand(["plate.czi"], probed, "first", "all", 4000)[0] == ["plate.czi#0"]
    assert bf.expand(["plate.czi"], probed, "Well B", "each", 4000)[0] == ["plate.czi#2c1", "plate.czi#2c2",
                                                                             "plate.czi#3c1", "plate.czi#3c2"]
    _, _, big, _ = bf.expand(["slide.czi"], probed, "label", "4", 4000)
    assert big and "has 3 channel(s); channel 4 does not exist" in big[0][1]


def test_a_series_too_large_for_the_heap_names_its_size_and_the_memory_it_needs():
    _, _, big, _ = bf.expand(["slide.czi"], {"slide.czi": SLIDE}, "all", "all", 100)
    assert big[0][0] == "slide.czi#0"
    assert "4096×3072" in big[0][1] and "48 MB" in big[0][1] and "set memory to at least" in big[0][1]


def test_unreadable_files_are_kept_apart():
    units, bad, _, _ = bf.expand(["x.nd2", "plate.czi"], {"x.nd2": {"error": "empty file"}, "plate.czi": PLATE},
                                 "first", "all", 4000)
    assert units == ["plate.czi#0"] and bad == {"x.nd2": "empty file"}


def test_tables_gain_file_series_and_channel_columns():
    table = pa.table({"image": ["a.tif", "p.czi#2", "p.czi#3c2"], "count": [1, 2, 3]})
    out = with_unit_columns(table, {"p.czi#2": "Well B1", "p.czi#3c2": "Well B2"}, "1").to_pydict()
    assert out["file"] == ["a.tif", "p.czi", "p.czi"]
    assert out["series"] == [None, 2, 3]
    assert out["series_name"] == [None, "Well B1", "Well B2"]
    assert out["channel"] == [None, 1, 2]     # the run's channel, or the unit's own
    assert list(out)[:5] == ["image", "file", "series", "series_name", "channel"]
