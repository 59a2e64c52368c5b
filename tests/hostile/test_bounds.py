"""Hostile input, round two (issue 36, items 3, 5, 6): inputs that hung, exhausted memory or smuggled controls.

Each case goes through the real ``validate`` (or, where only an image read through Bio-Formats or
a macro reaches the code, the real function validate calls) and asserts: a ConfigError naming the
field, the bound in its message, in bounded time, with no huge value echoed, and the storage root
unchanged (nothing made, nothing outside touched).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sciops.errors import ConfigError

#: What any one refusal may take (the alias bomb hung at 2.2 GB; the 50 MB file took 38 s of CPU).
SECONDS = 10
#: A message names the bound, never the value: no error is longer than this.
MESSAGE_MAX = 2000


def _tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` and its size (walked without recursion: some trees here are 1,200 deep)."""
    out, stack = {}, [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                else:
                    out[os.path.relpath(e.path, root)] = e.stat(follow_symlinks=False).st_size
    return out


def _refused(conf: dict, storage: Path, outside: Path, field: str, words: str, run_id: str = "manual__bounds"):
    from sciops.phases import checks

    before, before_outside = _tree(storage), _tree(outside)
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        checks.validate(conf, run_id)
    took = time.monotonic() - t0
    assert field in err.value.fields, (conf.keys(), err.value.problems)
    message = dict(err.value.problems)[field]
    assert words in message, message
    assert len(str(err.value)) < MESSAGE_MAX, str(err.value)[:300]
    assert took < SECONDS, f"took {took:.1f} s"
    assert _tree(storage) == before, "validate wrote in the storage root although it refused the run"
    assert _tree(outside) == before_outside, "validate changed something outside the storage root"
    return err.value


@pytest.fixture
def project(make_project):
    return make_project("proj")


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "keep.txt").write_text("untouched\n")
    return folder


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nmacro_args: {{k: *a{levels - 1}}}\n"


# (project.yaml content, field named, words the message holds) ----------------------------------------------
PROJECT_YAML = [
    (_alias_bomb(), "project.yaml", "alias"),
    ("base: &b {memory: 4G}\nimages_per_task: 3\n", "project.yaml", "anchor"),
    ("images_per_task: " + "[" * 3000 + "]" * 3000 + "\n", "project.yaml", "nested more than 16"),
    ("macro_args: " + "{a: " * 1200 + "1" + "}" * 1200 + "\n", "project.yaml", "nested more than 16"),
    ("- " * 3000 + "x\n", "project.yaml", "nested more than 16"),
    ("# padding\n" + "#" * (50 * 1024 * 1024) + "\n", "project.yaml", "more than the 65,536 bytes"),
    ("file_pattern: '" + "*.tif," * 9000 + "'\n", "file_pattern", "at most 4096"),
    ("macro: " + "a" * 60_000 + "\n", "macro", "at most 4096"),
    ("macro_args: {" + ", ".join(f"k{i}: {i}" for i in range(150)) + "}\n", "macro_args", "at most 100"),
    ("".join(f"x{i}: 1\n" for i in range(300)), "project.yaml", "more than the 200"),
    ("nightly: [" + ", ".join(["1"] * 5000) + "]\n", "project.yaml:nightly", "true or false"),
]


@pytest.mark.parametrize("text,field,words", PROJECT_YAML,
                         ids=[f"{f}-{i}" for i, (_, f, _w) in enumerate(PROJECT_YAML)])
def test_project_yaml_bounded(project, storage, outside, text, field, words):
    (project / "project.yaml").write_text(text)
    _refused({"project": "proj", "smoke_test": False}, storage, outside, field, words)


# (run conf overrides, field named, words) ------------------------------------------------------------------
CONTROLS = ["\x00", "\x1f", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029", "\r", "\x0b"]
PARAMS = [
    *[({"macro_args": {"k": f"a{c}output=/tmp/x"}}, "macro_args", "control") for c in CONTROLS],
    *[({"macro_argument": f"{{input}}{c},{{output}}"}, "macro_argument", "control")
      for c in CONTROLS if c not in "\r"],
    ({"macro_argument": "{input}\r{output}"}, "macro_argument", "U+000D"),
    ({"series": "(a+)+" * 60}, "series", "more than the 200"),
    ({"series": "("}, "series", "regular expression"),
    ({"macro_args": {f"k{i}": i for i in range(101)}}, "macro_args", "at most 100"),
    ({"sync_to": "/" + "a" * 5000}, "sync_to", "at most 4096"),
    ({**{f"x{i}": 1 for i in range(250)}}, "config", "more than the 200"),
    # values within the bounds but long: named, and shown short (reprlib), never whole
    ({"macro": "a" * 4000}, "macro", "neither a shipped macro"),
    ({"file_pattern": "x" * 4000}, "file_pattern", "no file"),
    ({"project": ["x" * 100] * 10_000}, "project", "must be a folder name"),
    ({"memory": "9" * 4000}, "memory", "not a memory size"),   # a float infinity: was an OverflowError
    ({"sync_to": "/" + "é" * 3000}, "sync_to", "longer than a path"),   # was accepted, then ENAMETOOLONG
    ({"sync_to": "/tmp/" + "a" * 300 + "/x"}, "sync_to", "folder name (255 bytes)"),
    ({"sync_from": "/tmp/" + "a" * 300}, "sync_from", "folder name (255 bytes)"),
]


@pytest.mark.parametrize("overrides,field,words", PARAMS, ids=[f"{f}-{i}" for i, (_, f, _w) in enumerate(PARAMS)])
def test_parameter_bounded(project, storage, outside, overrides, field, words):
    _refused({"project": "proj", "smoke_test": False, **overrides}, storage, outside, field, words)


def test_refused_run_ledger_row_is_bounded(project, storage, outside, tmp_path, monkeypatch):
    """A refused run still gets its ledger row, with each huge key and value cut short (reprlib)."""
    import json

    from sciops.accounting import ledger
    from sciops.phases import checks

    db = tmp_path / "ledger.db"
    monkeypatch.setenv("AIRFLOW_CONN_SCIOPS_LEDGER", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    conf = {"project": "proj", "smoke_test": False, "macro": "a" * 4000, "k" * 5000: "v" * 1_000_000,
            "macro_args": {f"k{i}": "x" * 100 for i in range(150)}}
    with pytest.raises(ConfigError):
        with checks.refusals(conf, "manual__huge", "fiji_project", "manual"):
            checks.validate(conf, "manual__huge")
    row = next(r for r in ledger.rows(url=f"sqlite:///{db}") if r["airflow_run_id"] == "manual__huge")
    assert row["status"] == "refused" and len(row["params"]) < 20_000 and len(row["reason"] or "") <= 4000
    assert "..." in json.loads(row["params"])["macro"]


def test_nightly_scan_bounded(project, make_project, storage, outside):
    """The nightly scan reads every project's project.yaml: one alias bomb is that project's problem only."""
    from sciops.run import nightly

    (project / "project.yaml").write_text(_alias_bomb() + "nightly: true\n")
    make_project("good", project_yaml="nightly: true\n")
    before = _tree(outside)
    t0 = time.monotonic()
    decisions = {d.project: d for d in nightly.scan()}
    assert time.monotonic() - t0 < SECONDS
    assert decisions["proj"].action == nightly.INVALID and "alias" in decisions["proj"].reason
    assert decisions["good"].action == nightly.RUN
    assert _tree(outside) == before


def test_sync_to_another_project(project, make_project, storage, outside):
    """Item 6: results synced into another project's folder would become its newest run."""
    other = make_project("other")
    for folder in (other, other / "output", storage, project):
        _refused({"project": "proj", "smoke_test": False, "sync_to": str(folder)}, storage, outside, "sync_to",
                 "inside")


def test_sync_from_another_project(project, make_project, storage, outside):
    from sciops.phases import transfer

    other = make_project("other")
    before = _tree(storage)
    with pytest.raises(ConfigError) as err:
        transfer.sync_up({"project": "proj", "sync_from": str(other)})
    assert err.value.fields == ["sync_from"] and "other" in str(err.value)
    assert _tree(storage) == before


# (what is done to the project, conf, field named, words) -----------------------------------------------------
def _image_named(name: str):
    def make(root: Path) -> None:
        (root / "input" / "a.tif").rename(root / "input" / name)
    return make


def _deep_input(levels: int):
    def make(root: Path) -> None:
        folders = [root / "input" / "/".join(["d"] * n) for n in range(1, levels + 1)]
        for folder in folders:
            folder.mkdir()
        (folders[-1] / "x.tif").write_bytes(b"")
        _cleanups.append(lambda: ((folders[-1] / "x.tif").unlink(), [f.rmdir() for f in reversed(folders)]))
    return make


#: Trees pytest's own (recursive) clean-up cannot remove: removed by the test that made them.
_cleanups: list = []


@pytest.fixture(autouse=True)
def _clean_deep_trees():
    yield
    while _cleanups:
        _cleanups.pop()()


FILES = [
    *[(_image_named(f"a{c}b.tif"), {}, "project", "control character") for c in ("\x1f", "\x7f", "\x85", "\x1b")],
    (_image_named("a\u2028b.tif"), {}, "project", "line break"),
    (_image_named("a,b.tif"), {"macro_argument": "{input},{output},5"}, "macro_argument", "','"),
    (_image_named("a b.tif"), {"macro_argument": "{input} {output}"}, "macro_argument", "' '"),
    (_deep_input(1200), {"file_pattern": "*"}, "project", "nested more than 64"),
]


@pytest.mark.parametrize("change,conf,field,words", FILES, ids=[f"{c[2]}-{i}" for i, c in enumerate(FILES)])
def test_project_files_bounded(project, storage, outside, change, conf, field, words):
    change(project)
    _refused({"project": "proj", "smoke_test": False, **conf}, storage, outside, field, words)


def test_braces_in_image_names_stay_names():
    """``{output}`` inside an image's name is not read as a placeholder again (one pass)."""
    from sciops_node.units import argument_for

    got = argument_for("{input},{output},{stem}", "/in/a{output}b.tif", "/out/x", {"k": "{name}"})
    assert got == "/in/a{output}b.tif,/out/x,a{output}b"
    lines = argument_for(None, "/in/a{k}.tif", "/out", {"k": "v{input}"}).split("\n")
    assert lines == ["input=/in/a{k}.tif", "output=/out", "k=v/in/a{k}.tif"]


# -- the series pattern: matched with a time bound (the files reach it only through Bio-Formats) ---------------
def _probed(names: list[str]) -> dict:
    return {"x.czi": {"series": [{"index": i, "name": n, "x": 64, "y": 64, "c": 1, "z": 1, "t": 1, "type": "uint8"}
                                 for i, n in enumerate(names)]}}


@pytest.mark.parametrize("pattern,name,refused", [
    ("(a+)+$", "a" * 40 + "!", False),          # the audit's: the regex module does not backtrack on these
    ("(a|aa)+$", "a" * 40 + "!", True),
    ("(a*)*b", "a" * 40, False),
    ("^(([a-z])+.)+[A-Z]([a-z])+$", "a" * 40 + "!", False),
    ("(.*a){30}$", "a" * 200 + "b", True),      # one that does: past the time bound, refused on series
])
def test_series_pattern_time_bound(pattern, name, refused):
    from sciops.imaging import bioformats
    from sciops.run.values import ValueChecks

    assert ValueChecks._series(pattern) == pattern   # a valid pattern: only matching it can hang
    t0 = time.monotonic()
    if refused:
        with pytest.raises(ConfigError) as err:
            bioformats.expand(["x.czi"], _probed([name]), pattern, "all", 2048)
        assert err.value.fields == ["series"] and "more than 0.2 s" in str(err.value)
    else:
        assert bioformats.expand(["x.czi"], _probed([name]), pattern, "all", 2048)[0] == []
    assert time.monotonic() - t0 < SECONDS


def test_series_names_with_controls_are_named_not_dropped():
    """U+2028 in a series name dropped the series silently (the table was split with str.splitlines)."""
    from sciops.imaging import bioformats

    rows = bioformats._parse("0\tWell\u2028B\t64\t64\t1\t1\t1\tuint8\n1\tplain\t64\t64\t1\t1\t1\tuint8\n")
    assert [r["name"] for r in rows] == ["Well\u2028B", "plain"]
    units, unreadable, _, _ = bioformats.expand(["x.czi"], {"x.czi": {"series": rows}}, "all", "all", 2048)
    assert units == [] and "U+2028" in unreadable["x.czi"]


def test_hash_at_rewrite_keeps_code_lines():
    """U+2028 in a comment: the ``#@`` rewrite numbered lines one way and rewrote them another."""
    from sciops.imaging.macros import headless_source

    text = "// a note\u2028 that goes on\n#@ String label\nprint(label);\nrun(\"Close All\");\n"
    out = headless_source(text)
    assert "print(label);" in out.split("\n") and 'run("Close All");' in out.split("\n")
    assert out.split("\n")[1].startswith("label = ")
