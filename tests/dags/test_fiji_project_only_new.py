"""only_new: a run processes only what this macro, with these arguments, has not processed (real ImageJ)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import fresh_dag, task_states

pytestmark = pytest.mark.imagej


def run(conf):
    from airflow.utils.state import DagRunState

    dr = fresh_dag().test(run_conf=conf)
    return dr, dr.state == DagRunState.SUCCESS


def latest_events():
    """The extras of the x-sciops://latest-results Asset's events, oldest first (Airflow's metadata DB)."""
    from sqlalchemy import select

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.uri == "x-sciops://latest-results").order_by(AssetEvent.id))
        return [dict(e.extra or {}) for e in rows]


def processed_by(run_dir):
    return set(pd.read_csv(run_dir / "summary.csv")["image"])


def newest_run(root):
    return max((p for p in (root / "output").iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)


def test_only_new_images_and_changed_ones_and_everything_for_new_arguments(airflow_db, make_project):
    from sciops.imaging.synthetic import make_images

    root = make_project("inc", counts={"a.tif": 3, "b.tif": 5}, size=128)
    conf = {"project": "inc", "only_new": True, "memory": "1G", "slots": 2, "smoke_test": False}
    dr, ok = run(conf)
    assert ok, task_states(dr)
    first = newest_run(root)
    assert processed_by(first) == {"a.tif", "b.tif"}
    assert json.loads((first / "run.json").read_text())["params"]["only_new"] is True

    dr, ok = run(conf)                       # nothing new: refused in validate, nothing run
    assert not ok and task_states(dr)["validate"] == "failed"
    assert newest_run(root) == first

    make_images(root / "input", {"c.tif": 4}, size=128)      # a new image
    make_images(root / "input", {"b.tif": 7}, size=128)      # same name, new content
    dr, ok = run(conf)
    assert ok, task_states(dr)
    third = newest_run(root)
    assert processed_by(third) == {"b.tif", "c.tif"}
    assert pd.read_csv(third / "summary.csv").set_index("image")["count"].astype(int).to_dict() == {"b.tif": 7,
                                                                                                  "c.tif": 4}

    # the project's one table of all runs: the newest result per image, and which run it came from
    latest = pd.read_csv(root / ".sciops" / "latest" / "summary.csv").set_index("image")
    assert latest["count"].astype(int).to_dict() == {"a.tif": 3, "b.tif": 7, "c.tif": 4}
    assert latest["run_id"].to_dict() == {"a.tif": first.name, "b.tif": third.name, "c.tif": third.name}
    assert latest_events()[-1] == {"project": "inc", "table": str(root / ".sciops" / "latest" / "summary.csv"),
                                   "images": 3, "run_id": third.name}    # what a DAG scheduled on it gets

    dr, ok = run({**conf, "macro_args": {"tag": "v2"}})       # other arguments: every image is new
    assert ok, task_states(dr)
    assert processed_by(newest_run(root)) == {"a.tif", "b.tif", "c.tif"}
