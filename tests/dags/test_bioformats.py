"""Microscope files through Bio-Formats (scripts/bioformats.sh's jar on ImageJ 1's plugins folder):
OME-TIFFs made with tifffile (multi-series, multi-channel, 16-bit, pyramidal; one of 50 series: its
metadata read once, its memo) with known nuclei in each series, through fiji_project on the local
backend and on Grid Engine; a vendor format ImageJ 1 cannot open itself (ICS, written by Bio-Formats' own converter); a real Zeiss CZI (written by Zeiss's
libCZI, from its tests in the aicspylibczi sdist); and files that cannot be read."""
from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from helpers import REPO, fresh_dag, task_states

pytestmark = pytest.mark.imagej

PLATE = [3, 5, 8, 13]
#: Issue 38: a file of many series (50 of 96 × 96, one channel: 0.9 MB), made once for the module.
MANY = [1 + i % 4 for i in range(50)]


@pytest.fixture(scope="module")
def many_series(tmp_path_factory):
    from sciops.imaging.synthetic import ome_tiff

    path = tmp_path_factory.mktemp("many") / "many.ome.tif"
    return path, ome_tiff(path, MANY, size=96, channels=1)


def only_run(root):
    runs = [p for p in (root / "output").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def bioformats_project(make_project, name="bf"):
    from sciops.imaging.synthetic import ome_tiff

    root = make_project(name, counts={"plain.tif": 4})
    want = {"plain.tif": 4}
    want.update(ome_tiff(root / "input" / "plate.ome.tif", PLATE, size=192))
    want.update(ome_tiff(root / "input" / "slide.ome.tif", [6], size=384, pyramid=True, names=["slide"]))
    return root, want


def counts(run):
    summary = pd.read_csv(run / "summary.csv")
    failures = pd.read_csv(run / "failures.csv")
    assert failures.empty, failures.to_string()
    return summary, dict(zip(summary["image"], summary["count"].astype(int)))


def test_series_are_units_of_work_on_the_local_backend(airflow_db, make_project, many_series, caplog):
    """Each series a unit; and a file whose metadata names 50 series (issue 38): validate reads its metadata
    once and no planes (validate's log), each JVM that runs its series opens it once, from validate's memo,
    never through the Importer (the runner's logs)."""
    root, want = bioformats_project(make_project)
    shutil.copyfile(many_series[0], root / "input" / "many.ome.tif")
    want.update(many_series[1])
    caplog.set_level("INFO", logger="sciops.imaging.bioformats")
    dr = fresh_dag().test(run_conf={"project": "bf", "file_pattern": "*.tif", "memory": "1G", "images_per_task": 3})
    assert dr.state == "success", task_states(dr)
    run = only_run(root)
    summary, got = counts(run)
    assert got == want      # each series its own count; the pyramid's lower levels are not units
    reads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Bio-Formats read many.ome.tif")]
    assert len(reads) == 1 and " once: 50 series from its metadata (parsed), 0 plane(s) read" in reads[0], reads
    logs = [p.read_text() for p in (run / "logs").glob("task-*.attempt-*.log")]
    opened = [ln for text in logs for ln in text.splitlines() if ln.startswith("[bio-formats]") and "many" in ln]
    jvms = sum(json.loads(p.read_text())["jvm_starts"] for p in (run / "work" / "status").glob("task-*.attempt-*.json"))
    assert 1 <= len(opened) <= jvms and all(ln.endswith("(metadata memo)") for ln in opened), (opened, jvms)
    assert list((run / "work" / "bfmemo").rglob(".many.ome.tif.bfmemo"))
    row = summary.set_index("image").loc["plate.ome.tif#2"]
    assert (row["file"], int(row["series"]), row["series_name"]) == ("plate.ome.tif", 2, "position 3")
    assert pd.isna(summary.set_index("image").loc["plain.tif", "series"])
    results = pd.read_csv(run / "results.csv")
    assert list(results.columns[:5]) == ["image", "file", "series", "series_name", "channel"]
    assert results.groupby("image").size().to_dict() == want
    doc = json.loads((run / "run.json").read_text())
    assert doc["bioformats_version"] == "7.3.1" and doc["images"]["total"] == len(want)
    series = json.loads((run / "work" / "series.json").read_text())
    assert [s["name"] for s in series["plate.ome.tif"]["series"]] == [f"position {i}" for i in range(1, 5)]


def test_series_and_channel_selection(airflow_db, make_project):
    """series by a name pattern, and every channel a unit: channel 2 is noise, channel 1 the nuclei."""
    root, _ = bioformats_project(make_project, "bfsel")
    dr = fresh_dag().test(run_conf={"project": "bfsel", "file_pattern": "plate.ome.tif", "memory": "1G",
                                    "series": "position [24]", "channel": "each", "smoke_test": False})
    assert dr.state == "success", task_states(dr)
    summary = pd.read_csv(only_run(root) / "summary.csv").set_index("image")
    assert sorted(summary.index) == ["plate.ome.tif#1c1", "plate.ome.tif#1c2", "plate.ome.tif#3c1",
                                     "plate.ome.tif#3c2"]
    assert summary.loc["plate.ome.tif#1c1", "count"] == 5 and summary.loc["plate.ome.tif#3c1", "count"] == 13
    assert summary.loc["plate.ome.tif#3c2", "channel"] == 2


def ics_file(src, dest):
    """An ICS file (a format ImageJ 1 cannot open itself), written by Bio-Formats' own converter."""
    from sciops.imaging.imagej import detect_launcher

    jar = f"{detect_launcher('imagej1')['plugins_dir']}/plugins/bioformats_package.jar"
    subprocess.run(["java", "-cp", jar, "loci.formats.tools.ImageConverter", "-series", "1", str(src), str(dest)],
                   check=True, capture_output=True, timeout=120)


def test_a_vendor_format_and_unreadable_files(airflow_db, make_project, tmp_path, many_series):
    """A vendor format goes through the same path; a truncated file, a 50-series file with its last series
    cut off (found without reading its planes), a .czi holding a TIFF and an empty .nd2 are refused in
    validate with their reasons, or, with skip_unreadable, listed in failures.csv."""
    from sciops.imaging.synthetic import ome_tiff

    root = make_project("bfbad", counts={})
    ome_tiff(tmp_path / "src.ome.tif", [4, 7], size=160)
    ics_file(tmp_path / "src.ome.tif", root / "input" / "well.ics")
    good = (tmp_path / "src.ome.tif").read_bytes()
    (root / "input" / "cut.ome.tif").write_bytes(good[: len(good) // 2])
    many = many_series[0].read_bytes()
    (root / "input" / "cut_plate.ome.tif").write_bytes(many[: len(many) * 9 // 10])
    shutil.copyfile(tmp_path / "src.ome.tif", root / "input" / "renamed.czi")
    (root / "input" / "empty.nd2").write_bytes(b"")
    conf = {"project": "bfbad", "file_pattern": "*", "memory": "1G"}
    dr = fresh_dag().test(run_conf=conf)
    assert dr.state == "failed"
    refused = json.loads((only_run(root) / "run.json").read_text())
    reason = refused["reason"]
    for name, why in (("cut.ome.tif", "truncated"), ("cut_plate.ome.tif", "truncated"),
                      ("renamed.czi", "it is a TIF file"), ("empty.nd2", "empty file")):
        assert f"{name}: " in reason and why in reason, reason
    assert "skip_unreadable" in reason and "well.ics" not in reason
    shutil.rmtree(root / "output")

    dr = fresh_dag().test(run_conf={**conf, "skip_unreadable": True})
    assert dr.state == "success", task_states(dr)
    run = only_run(root)
    summary = pd.read_csv(run / "summary.csv").set_index("image")
    assert summary["count"].astype(int).to_dict() == {"well.ics#0": 7}
    failures = pd.read_csv(run / "failures.csv").set_index("image")
    assert sorted(failures.index) == ["cut.ome.tif", "cut_plate.ome.tif", "empty.nd2", "renamed.czi"]
    assert "truncated" in failures.loc["cut.ome.tif", "error"]
    report = (run / "report.html").read_text()
    assert "Bio-Formats 7.3.1" in report and "<th>series</th>" in report and "empty.nd2" in report


# What the macro sees of a unit: the plain TIFF the driver made of it.
DESCRIBE_MACRO = r"""// @sciops outputs: results.csv summary.csv
lines = split(getArgument(), "\n");
input = ""; output = "";
for (i = 0; i < lines.length; i++) {
    if (startsWith(lines[i], "input=")) input = substring(lines[i], 6);
    if (startsWith(lines[i], "output=")) output = substring(lines[i], 7);
}
open(input);
w = getWidth(); h = getHeight(); n = nSlices; d = bitDepth(); m = getValue("Mean");
File.saveString("plane,mean\n1," + m + "\n", output + "/results.csv");
File.saveString("width,height,planes,bits\n" + w + "," + h + "," + n + "," + d + "\n", output + "/summary.csv");
"""


def test_a_zeiss_czi_written_by_libczi(airflow_db, make_project):
    """A real vendor file (Zeiss's libCZI test CZI, scripts/testbed/vendor_sample.sh): validate reads its
    series through Bio-Formats' Zeiss reader and the macro gets its one 1x1 series with both time points."""
    sample = REPO / ".testbed" / "samples" / "libczi-t2.czi"
    assert sample.is_file(), "the vendor sample is missing: run scripts/testbed/vendor_sample.sh (scripts/test.sh does)"
    root = make_project("bfczi", counts={})
    shutil.copyfile(sample, root / "input" / "zeiss.czi")
    (root / "src" / "describe.ijm").write_text(DESCRIBE_MACRO)
    dr = fresh_dag().test(run_conf={"project": "bfczi", "file_pattern": "*.czi", "macro": "src/describe.ijm",
                                    "memory": "1G"})
    assert dr.state == "success", task_states(dr)
    run = only_run(root)
    assert pd.read_csv(run / "failures.csv").empty
    summary = pd.read_csv(run / "summary.csv")
    assert summary["image"].tolist() == ["zeiss.czi#0"] and summary["series"].tolist() == [0]
    assert summary[["width", "height", "planes", "bits"]].values.tolist() == [[1, 1, 2, 8]]
    series = json.loads((run / "work" / "series.json").read_text())
    assert "zeiss.czi" in series, series


def test_a_series_larger_than_memory_is_refused_with_what_it_needs(airflow_db, make_project):
    from sciops.imaging.synthetic import ome_tiff

    root = make_project("bfbig", counts={})
    ome_tiff(root / "input" / "big.ome.tif", [5], size=4096, channels=4)   # 128 MB of pixels
    dr = fresh_dag().test(run_conf={"project": "bfbig", "file_pattern": "*.tif", "memory": "512M"})
    assert dr.state == "failed"
    reason = json.loads((only_run(root) / "run.json").read_text())["reason"]
    assert "big.ome.tif#0" in reason and "4096×4096" in reason and "set memory to at least" in reason, reason


def test_series_on_grid_engine(airflow_db, gridengine, shared_storage, make_project):
    """The same files on SGE over SSH: the head node's Bio-Formats is found by the backend's probe and
    given to each task's JVM; each series gives its known count."""
    root, want = bioformats_project(make_project, "bfsge")
    dr = fresh_dag().test(run_conf={"project": "bfsge", "file_pattern": "*.tif", "backend": "existing",
                                    "scheduler": "sge", "ssh_conn_id": gridengine, "memory": "1G",
                                    "stall_seconds": 20, "images_per_task": 2})
    assert dr.state == "success", task_states(dr)
    run = only_run(root)
    _, got = counts(run)
    assert got == want
    doc = json.loads((run / "run.json").read_text())
    assert doc["bioformats_version"] == "7.3.1" and doc["array"]["job_ids"][0].isdigit()
    attempt = json.loads(next((run / "work" / "status").glob("task-*.attempt-*.json")).read_text())
    assert attempt["bioformats_version"] == "7.3.1"


def test_series_with_s3_storage(airflow_db, s3_root, tmp_path):
    """On an S3 root validate fetches the Bio-Formats files to read their series; the run stages in,
    runs each series and brings the tables back."""
    from sciops.imaging.synthetic import ome_tiff

    lan = tmp_path / "lan" / "bfs3"
    (lan / "input").mkdir(parents=True)
    (lan / "src").mkdir()
    want = ome_tiff(lan / "input" / "plate.ome.tif", [4, 9], size=160)
    conf = {"project": "bfs3", "sync_from": str(lan), "storage_root": s3_root.url, "aws_conn_id": "sciops_s3",
            "file_pattern": "*.ome.tif", "memory": "1G"}
    dr = fresh_dag().test(run_conf=conf)
    assert dr.state == "success", task_states(dr)
    [run] = [p for p in (lan / "output").iterdir() if p.is_dir()]
    _, got = counts(run)
    assert got == want



def test_a_memo_of_an_older_version_of_the_file_is_ignored(imagej, many_series, tmp_path):
    """Memo files are keyed by the file's size and mtime besides Bio-Formats' own check (a memo newer than
    the file): a file replaced by another version, even one given the old mtime back (a copy that keeps
    mtimes), is parsed again, never answered from the old memo; a file left alone is read from its memo."""
    import os

    from sciops.imaging import bioformats
    from sciops.imaging.synthetic import ome_tiff

    folder, memo = tmp_path / "input", tmp_path / "bfmemo"
    folder.mkdir()
    for name in ("kept.ome.tif", "replaced.ome.tif"):
        shutil.copyfile(many_series[0], folder / name)
    first = bioformats.probe(["kept.ome.tif", "replaced.ome.tif"], folder, imagej, 1024, memo_dir=memo)
    assert [(len(f["series"]), f["read"]["from"]) for f in first.values()] == [(50, "parsed")] * 2, first
    old = (folder / "replaced.ome.tif").stat()
    ome_tiff(folder / "replaced.ome.tif", [2, 3, 4], size=96, channels=1)   # another version of the file
    os.utime(folder / "replaced.ome.tif", ns=(old.st_atime_ns, old.st_mtime_ns))
    again = bioformats.probe(["kept.ome.tif", "replaced.ome.tif"], folder, imagej, 1024, memo_dir=memo)
    assert (len(again["kept.ome.tif"]["series"]), again["kept.ome.tif"]["read"]["from"]) == (50, "memo")
    assert (len(again["replaced.ome.tif"]["series"]), again["replaced.ome.tif"]["read"]["from"]) == (3, "parsed")
