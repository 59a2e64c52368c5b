"""fiji_project with its storage root on S3 (moto_server over HTTP): sync up, stage in, run,
stage out, sync down; on this machine (local backend) and on Grid Engine over SSH."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import fresh_dag, task_states

pytestmark = pytest.mark.imagej

COUNTS = {"n05.tif": 5, "n12.tif": 12, "plate 2/n17 é.tif": 17, "n26.tif": 26}


def lan_project(root: Path) -> Path:
    from sciops.imaging.synthetic import make_images

    (root / "input").mkdir(parents=True)
    (root / "src").mkdir()
    make_images(root / "input", COUNTS, size=256)
    (root / "project.yaml").write_text("images_per_task: 2\nmemory: 1G\n")
    return root


def s3_keys(storage, *parts) -> dict:
    return storage.tree(*parts).list()


def test_local_backend_with_s3_storage_sync_up_and_down(airflow_db, s3_root, tmp_path):
    lan = lan_project(tmp_path / "lan" / "cells")
    conf = {"project": "cells", "sync_from": str(lan), "storage_root": s3_root.url, "aws_conn_id": "sciops_s3"}
    dr = fresh_dag().test(run_conf=conf)
    assert dr.state == "success", task_states(dr)
    states = task_states(dr)
    # no cluster to make: the setup and its teardown succeed with nothing to do
    assert (states.pop("create_cluster"), states.pop("delete_cluster")) == ("success", "success")
    assert set(states.values()) == {"success"}  # every storage step ran
    remote = s3_keys(s3_root, "cells")
    assert {f"input/{k}" for k in COUNTS} | {"project.yaml"} <= set(remote)
    [run_id] = {k.split("/")[1] for k in remote if k.startswith("output/")}
    for name in ("results.csv", "summary.csv", "failures.csv", "run.json"):
        assert f"output/{run_id}/{name}" in remote, name
    # only the run's own prefix was written under output/
    assert all(k.startswith(f"output/{run_id}/") for k in remote if k.startswith("output/"))
    # results came back to the LAN folder; input/ there untouched
    summary = pd.read_csv(lan / "output" / run_id / "summary.csv").set_index("image")
    assert summary["count"].astype(int).to_dict() == COUNTS
    run = json.loads((lan / "output" / run_id / "run.json").read_text())
    assert run["status"] == "success" and run["storage_root"] == s3_root.url
    assert {"sync_up", "validate", "stage_in", "plan", "run_array", "collate", "stage_out", "sync_down"} <= set(
        run["phases"])
    assert run["phases"]["sync_up"]["transferred"] == len(COUNTS) + 1
    assert json.loads(s3_root.read_bytes("cells", "output", run_id, "run.json"))["status"] == "success"

    # the bucket loses the run's results after stage_out (an endpoint restarted, a lifecycle rule): a sync_down
    # that copies nothing must fail, naming what is missing, not end "success" (issue 17)
    from sciops.errors import SciOpsError
    from sciops.phases import transfer
    from sciops.run.runinfo import RunInfo

    out = s3_root.tree("cells", "output", run_id)
    for rel in out.list():
        out.client.delete(out.key(rel))
    info = RunInfo(run_id=run_id, airflow_run_id=run["airflow_run_id"], project="cells", project_root=run["run_dir"],
                   run_dir=run["run_dir"], config=run["params"], images=run["images"]["total"], macro_path="",
                   macro_sha256=run["macro"]["sha256"], launcher={})
    elsewhere = info.model_copy(update={"config": info.config.model_copy(update={"sync_to": str(tmp_path / "lan2")})})
    with pytest.raises(SciOpsError, match="results.csv, summary.csv, failures.csv missing from"):
        transfer.sync_down(elsewhere)
    assert transfer.sync_down(info)["transferred"] == 0   # the LAN copy made before still has them: fine
    stage_out_again = transfer.stage_out(info)            # the fix the message gives: push, then fetch again
    assert stage_out_again and transfer.sync_down(elsewhere)

    # a second run: nothing to sync up, the working copy is reused
    dr = fresh_dag().test(run_conf=conf)
    assert dr.state == "success", task_states(dr)
    runs = sorted(p for p in (lan / "output").iterdir())
    second = json.loads((runs[-1] / "run.json").read_text()) if runs[-1].name != run_id else json.loads(
        (runs[0] / "run.json").read_text())
    assert second["phases"]["sync_up"]["transferred"] == 0


def test_bad_bucket_fails_in_validate_before_anything_runs(airflow_db, s3_endpoint, tmp_path):
    dr = fresh_dag().test(run_conf={"project": "cells", "storage_root": "s3://no-such-bucket-anywhere",
                                    "aws_conn_id": "sciops_s3"})
    states = task_states(dr)
    assert dr.state == "failed"
    assert states["validate"] == "failed"
    assert states["plan"] == states["run_array"] == "upstream_failed"
    # with sync_from, sync_up (in validate) refuses first; deliver has no run folder to bring back and skips
    lan = lan_project(tmp_path / "lan" / "cells")
    dr = fresh_dag().test(run_conf={"project": "cells", "storage_root": "s3://no-such-bucket-anywhere",
                                    "aws_conn_id": "sciops_s3", "sync_from": str(lan)})
    states = task_states(dr)
    assert dr.state == "failed" and states["validate"] == "failed" and states["deliver"] == "skipped", states


def test_grid_engine_with_s3_storage(airflow_db, gridengine, shared_storage, s3_root, tmp_path, monkeypatch):
    """The head node stages the project in and the run out with its own AWS CLI and credentials."""
    from sciops.storage.sync import sync_up

    monkeypatch.setenv("SCIOPS_WORK_ROOT", str(shared_storage))  # the cluster sees the working copies here
    lan = lan_project(tmp_path / "lan" / "cells")
    sync_up(s3_root, lan, "cells")
    conf = {"project": "cells", "backend": "existing", "scheduler": "sge", "ssh_conn_id": "sciops_cluster",
            "stall_seconds": 10, "storage_root": s3_root.url, "aws_conn_id": "sciops_s3", "sync_to": str(lan)}
    dr = fresh_dag().test(run_conf=conf)
    assert dr.state == "success", task_states(dr)
    states = task_states(dr)
    assert states["plan"] == states["deliver"] == "success"
    run = json.loads(next((lan / "output").glob("*/run.json")).read_text())
    assert "sync_up" not in run["phases"] and run["phases"]["stage_in"]["status"] == "success"
    assert run["phases"]["stage_out"]["status"] == "success"
    # the images reached the working copy through the head node (owned by the cluster's user)
    staged = shared_storage / "cells" / "input" / "n05.tif"
    assert staged.exists() and staged.owner() == "sciops"
    remote = s3_keys(s3_root, "cells")
    [run_id] = {k.split("/")[1] for k in remote if k.startswith("output/")}
    assert f"output/{run_id}/results.csv" in remote and f"output/{run_id}/run.json" in remote
    summary = pd.read_csv(lan / "output" / run_id / "summary.csv").set_index("image")
    assert summary["count"].astype(int).to_dict() == COUNTS
