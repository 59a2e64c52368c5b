"""Hostile and careless input through the real ``validate``: one clear error naming the field, nothing run.

Each case changes one thing (a parameter, project.yaml, a name, a path, a symlink, the
project's files) and asserts: ``validate`` raises a ConfigError naming exactly the
expected field, with a message that says what to do; nothing was created anywhere in the
storage root (no run folder, no output/), and nothing outside it was read into an error.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from sciops.errors import ConfigError

NAN, INF = float("nan"), float("inf")
HOSTILE = ["$(reboot)", "`id`", "a;rm -rf ~", "a b", "x|y", "a&&b", "'q'", "\"q\"", "a\nb", "-V"]

# (conf overrides, field named) -----------------------------------------------------------------
PARAMS: list[tuple[dict, str]] = [
    *[({"project": v}, "project") for v in
      ("", "..", ".", "a/b", "/abs", "-dash", " lead", "a" * 101, "missing", 123, ["x"], {"a": 1}, True, *HOSTILE)],
    *[({"macro": v}, "macro") for v in
      ("/etc/passwd", "../x.ijm", "src/../../x.ijm", "~/.bashrc", "a\\b", "src/missing.ijm", "no_such", "", 5,
       "x;y", "$(id)", "src/", ["count_nuclei"])],
    *[({"macro_args": v}, "macro_args") for v in
      ({"bad key": 1}, {"input": "x"}, {"output": "/tmp"}, {"k": "a\tb"}, {"k": "a\nb"}, "k=v", ["a"],
       {"k": [1]}, {"k": {"a": 1}}, {"1k": 1}, {"": 1}, {"k" * 65: 1})],
    *[({"file_pattern": v}, "file_pattern") for v in
      ("/abs/*.tif", "../*.tif", " , ", "", "*.png", "a/../../*", 7, "~/x", "*.tif,/etc/*")],
    *[({"images_per_task": v}, "images_per_task") for v in (-1, 10**6, 1.5, "5", True, NAN)],
    *[({"max_attempts": v}, "max_attempts") for v in (0, 21, True, "3", 2.5, 10**9)],
    *[({"image_timeout_s": v}, "image_timeout_s") for v in (0, -5, 10**15, True, "60")],
    *[({"stall_seconds": v}, "stall_seconds") for v in (0, 10**7, "x", False)],
    *[({"memory": v}, "memory") for v in ("lots", "12", "100000T", "-1G", "2X", 2048, True, "", "2 G B")],
    *[({"backend": v}, "backend") for v in ("kubernetes", "", 3, "LOCAL")],
    *[({"launcher": v}, "launcher") for v in ("napari", "", 1, "FIJI")],
    *[({"smoke_test": v}, "smoke_test") for v in ("yes", 1, "true", "off")],
    *[({"slots": v}, "slots") for v in (-1, 5000, True, "2", 1.5)],
    ({"scheduler": "pbs"}, "scheduler"),
    ({"scheduler": "sge"}, "scheduler"),  # local backend: only its own scheduler
    ({"backend": "parallelcluster", "scheduler": "sge"}, "scheduler"),
    *[({"backend": "existing", "ssh_conn_id": v}, "ssh_conn_id") for v in ("-V", "a b", "x;y", "$(id)", "postgres_prod")],
    *[({"backend": "existing", "queue": v}, "queue") for v in ("-V", "a b", "q;rm", "`id`")],
    *[({"backend": "existing", "accounting_project": v}, "accounting_project") for v in ("-P", "a b", "p$x")],
    *[({"backend": "existing", "memory_resource": v}, "memory_resource") for v in ("h vmem", "1abc", "h_vmem;x")],
    *[({"backend": "existing", "exclusive": v}, "exclusive") for v in ("yes", 1)],
    *[({"backend": "existing", "one_per_host": v}, "one_per_host") for v in ("no", 1)],
    *[({"backend": "existing", "cluster_python": v}, "cluster_python") for v in ("python3; rm", "py thon", "$(id)")],
    *[({"backend": "existing", "cluster_storage_root": v}, "cluster_storage_root")
      for v in ("relative", "/a/../b", "/a b", "/x;y")],
    *[({"storage_root": v}, "storage_root") for v in
      ("/etc", "/nonexistent", "projects/here", "s3://Bad_Bucket", "ftp://x", "s3://another-bucket", "/a/../b",
       "file:///etc")],
    *[({"aws_conn_id": v}, "aws_conn_id") for v in ("my conn", "aws_admin", "-x")],
    *[({"sync_from": v}, "sync_from") for v in ("lan/proj", "/a/../b", "rel/../x")],
    *[({"sync_to": v}, "sync_to") for v in ("../up", "/etc/hostname/results", "rel")],
    *[({"budget_usd": v}, "budget_usd") for v in (0, -1, NAN, INF, True, "5")],
    *[({"hourly_rate_usd": v}, "hourly_rate_usd") for v in (-1, NAN, INF, True, "1")],
    *[({"slack_conn_id": v}, "slack_conn_id") for v in ("a;b", "other_slack", "-x")],
    # a field of another backend, changed for this run, would be silently ignored
    ({"queue": "q1"}, "queue"),
    ({"backend": "existing", "slots": 4}, "slots"),
    ({"exclusive": True}, "exclusive"),
    ({"cluster": {"region": "eu-west-1"}}, "cluster"),
    ({"cluster_storage_root": "/srv"}, "cluster_storage_root"),
    # unknown parameters
    *[({k: 1}, k) for k in ("images_per_tsk", "foo", "__class__", "Project")],
]

# (project.yaml text or bytes, field named) ---------------------------------------------------------
PROJECT_YAML: list[tuple[str | bytes, str]] = [
    (os.urandom(64) + b"\xff\xfe", "project.yaml"),
    (b"\xff\xfe\x00images_per_task: 3", "project.yaml"),
    ("images_per_task: [unclosed", "project.yaml"),
    ("- a\n- b\n", "project.yaml"),
    ("just text", "project.yaml"),
    ("!!python/object/apply:os.system ['id']", "project.yaml"),
    ("budget: 3\n", "project.yaml:budget"),
    ("project: other\n", "project.yaml:project"),
    ("storage_root: /etc\n", "project.yaml:storage_root"),
    ("sync_from: /home\n", "project.yaml:sync_from"),
    ("aws_conn_id: aws_admin\n", "project.yaml:aws_conn_id"),
    ("images_per_task: .nan\n", "images_per_task"),
    ("budget_usd: .inf\n", "budget_usd"),
    ("memory: lots\n", "memory"),
    ("backend: kubernetes\n", "backend"),
    ("images_per_task: yes\n", "images_per_task"),
    ("macro: /etc/passwd\n", "macro"),
    ("file_pattern: ../*\n", "file_pattern"),
    ("macro_args: {input: /etc/passwd}\n", "macro_args"),
    ("queue: -V\nbackend: existing\n", "queue"),
    ("max_attempts: 1e9\n", "max_attempts"),
]


@pytest.fixture
def project(make_project, storage):
    root = make_project("proj")
    return root


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(conf: dict, storage: Path, field: str, run_id: str = "manual__hostile") -> ConfigError:
    from sciops.phases import checks

    before = _tree(storage)
    with pytest.raises(ConfigError) as err:
        checks.validate(conf, run_id)
    assert field in err.value.fields, (conf, err.value.problems)
    message = dict(err.value.problems)[field]
    assert len(message) > 15, message  # a sentence, not a bare type name
    assert _tree(storage) == before, "validate wrote something although it refused the run"
    return err.value


@pytest.mark.parametrize("overrides,field", PARAMS, ids=[f"{f}-{i}" for i, (_, f) in enumerate(PARAMS)])
def test_bad_parameter(project, storage, overrides, field):
    _refused({"project": "proj", "smoke_test": False, **overrides}, storage, field)


@pytest.mark.parametrize("text,field", PROJECT_YAML, ids=[f"{f}-{i}" for i, (_, f) in enumerate(PROJECT_YAML)])
def test_bad_project_yaml(project, storage, text, field):
    path = project / "project.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    err = _refused({"project": "proj", "smoke_test": False}, storage, field)
    if field == "project.yaml":
        assert "line" in str(err) or "UTF-8" in str(err) or "mapping" in str(err)


def _symlinked_yaml(root: Path, tmp: Path) -> None:
    secret = tmp / "db.yaml"
    secret.write_text("db_password: hunter2-secret\n")
    (root / "project.yaml").symlink_to(secret)


def _symlinked_input(root: Path, tmp: Path) -> None:
    outside = tmp / "elsewhere"
    (root / "input").rename(outside)
    (root / "input").symlink_to(outside)


def _outside_macro(root: Path, tmp: Path) -> None:
    (tmp / "evil.ijm").write_text("// @sciops outputs: results.csv\n")
    (root / "src" / "evil.ijm").symlink_to(tmp / "evil.ijm")


def _image_named(name: str):
    def make(root: Path, tmp: Path) -> None:
        (root / "input" / "a.tif").rename(root / "input" / name)
        (root / "input" / "b.tif").unlink()
    return make


def _no_input(root: Path, tmp: Path) -> None:
    import shutil

    shutil.rmtree(root / "input")


def _empty_input(root: Path, tmp: Path) -> None:
    for p in (root / "input").iterdir():
        p.unlink()


def _output_is_a_file(root: Path, tmp: Path) -> None:
    (root / "output").write_text("not a folder")  # what a read-only output/ does too: the run folder cannot be made


def _macro_is_a_folder(root: Path, tmp: Path) -> None:
    (root / "src" / "dir.ijm").mkdir()


# (what to do to the project, extra conf, field named, a word the message must hold)
FILES = [
    (_symlinked_yaml, {}, "project.yaml", "symlink"),
    (_symlinked_input, {}, "project", "symlink"),
    (_outside_macro, {"macro": "src/evil.ijm"}, "macro", "neither"),
    (_image_named("tab\there.tif"), {}, "project", "tab"),
    (_image_named("line\nbreak.tif"), {}, "project", "line break"),
    (_image_named("cr\rreturn.tif"), {}, "project", "line break"),
    (_no_input, {}, "project", "no input/"),
    (_empty_input, {}, "file_pattern", "no file"),
    (_output_is_a_file, {}, "project", "writable"),
    (_macro_is_a_folder, {"macro": "src/dir.ijm"}, "macro", "neither"),
]


@pytest.mark.parametrize("change,conf,field,words", FILES, ids=[c[0].__name__ for c in FILES])
def test_bad_project_files(project, storage, tmp_path, change, conf, field, words):
    change(project, tmp_path)
    err = _refused({"project": "proj", "smoke_test": False, **conf}, storage, field)
    assert words in dict(err.problems)[field], err
    assert "hunter2-secret" not in str(err)  # a file outside the project is never read into an error


def test_the_suite_is_big_enough():
    assert len(PARAMS) + len(PROJECT_YAML) + len(FILES) >= 150
