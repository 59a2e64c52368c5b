"""The nightly scan over a storage root of four projects (and one that is not in the batch), in a folder and
on the S3 testbed: which get a run, over which images, and which are reported."""
from __future__ import annotations

from pathlib import Path

from sciops.run import nightly
from sciops.run import processed
from sciops.run.project import Project, sha256
from sciops.imaging.synthetic import make_images

COUNTS = {f"img_{i}.tif": 3 + i for i in range(6)}


def make_root(folder: Path) -> None:
    """fresh: never run; done: every image processed; third: 4 of 6 processed (2 added since); broken: a bad
    project.yaml; manual: not in the nightly batch."""
    for name, yaml in (("fresh", "nightly: true\n"), ("done", "nightly: true\n"), ("third", "nightly: true\n"),
                       ("broken", "nightly: true\nimages_per_task: many\n"), ("manual", "images_per_task: 5\n")):
        (folder / name / "src").mkdir(parents=True)
        (folder / name / "project.yaml").write_text(yaml)
        make_images(folder / name / "input", COUNTS, size=128)


def mark_processed(storage, project: str, images: list[str], macro_args=None) -> None:
    macro = Project(project, Path("/nonexistent")).resolve_macro("count_nuclei")
    ids = processed.content_ids(storage, project)
    processed.add(storage, project, processed.key(sha256(macro), macro_args or {}),
                  {rel: ids[rel] for rel in images}, "earlier-run")


def check_scan(storage, edit_yaml) -> None:
    mark_processed(storage, "done", list(COUNTS))
    mark_processed(storage, "third", list(COUNTS)[:4])
    decisions = {d.project: d for d in nightly.scan(storage)}
    assert {p: d.action for p, d in decisions.items()} == {
        "fresh": "run", "done": "skip", "third": "run", "broken": "invalid", "manual": "skip"}
    assert (decisions["fresh"].new, decisions["third"].new, decisions["third"].images) == (6, 2, 6)
    assert "nothing new" in decisions["done"].reason and "nightly: true" in decisions["manual"].reason
    assert "images_per_task" in decisions["broken"].reason
    assert nightly.run_confs(list(decisions.values())) == [{"project": "fresh", "only_new": True},
                                                           {"project": "third", "only_new": True}]
    edit_yaml("done", "nightly: true\nmacro_args: {threshold: 40}\n")       # other arguments: all new again
    again = {d.project: d for d in nightly.scan(storage)}
    assert (again["done"].action, again["done"].new) == ("run", 6)
    macro = Project("x", Path("/nonexistent")).resolve_macro("count_nuclei").read_text()
    edit_yaml("third", "nightly: true\nmacro: src/mine.ijm\n", {"src/mine.ijm": "// changed\n" + macro})
    changed = {d.project: d for d in nightly.scan(storage)}
    assert (changed["third"].action, changed["third"].new) == ("run", 6)      # another macro: all new again


def test_scan_on_a_folder(tmp_path, slack_receiver, monkeypatch):
    from sciops.storage.root import LocalStorage

    make_root(tmp_path / "root")
    storage = LocalStorage(str(tmp_path / "root"))

    def edit(project, text, files=None):
        (tmp_path / "root" / project / "project.yaml").write_text(text)
        for rel, body in (files or {}).items():
            (tmp_path / "root" / project / rel).write_text(body)

    check_scan(storage, edit)
    nightly.report(nightly.scan(storage))
    assert len(slack_receiver) == 1
    text = slack_receiver[0]["json"]["text"]
    assert "*broken*" in text and "images_per_task" in text and "fresh" not in text


def test_scan_on_s3_lists_each_project_once(s3_root, tmp_path, monkeypatch):
    from sciops.storage.s3 import S3Client
    from sciops.storage.sync import sync_up

    lan = tmp_path / "lan"
    make_root(lan)
    for project in ("fresh", "done", "third", "broken", "manual"):
        sync_up(s3_root, lan / project, project)

    def edit(project, text, files=None):
        (lan / project / "project.yaml").write_text(text)
        for rel, body in (files or {}).items():
            (lan / project / rel).write_text(body)
        sync_up(s3_root, lan / project, project)

    listed, heads = [], []
    real_list, real_head = S3Client.list, S3Client.head
    monkeypatch.setattr(S3Client, "list", lambda self, prefix="": listed.append(prefix) or real_list(self, prefix))
    monkeypatch.setattr(S3Client, "head", lambda self, key: heads.append(key) or real_head(self, key))
    check_scan(s3_root, edit)
    assert not [k for k in heads if "/input/" in k], "a request per image"
