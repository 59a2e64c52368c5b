"""Each backend class on its own, without Airflow: what it owns is what differs between backends."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO
from sciops.clusters import backend_class, get_backend
from sciops.run.config import BACKENDS, build
from sciops.errors import ConfigError

PCLUSTER = {"region": "eu-west-1", "subnet_id": "subnet-0123456789abcdef0", "key_name": "lab-key",
            "custom_ami": "ami-0123456789abcdef0", "max_count": 2}


@pytest.fixture
def s3_allowed(monkeypatch):
    monkeypatch.setenv("SCIOPS_ALLOWED_STORAGE_ROOTS", "s3://imaging-projects")
    return "s3://imaging-projects"


def cfg_of(backend: str, **conf):
    return build({"project": "p", "backend": backend, **conf})


def test_every_backend_is_one_module_named_as_the_parameter():
    for name in BACKENDS:
        cls = backend_class(name)
        assert cls.name == name and cls.__module__ == f"sciops.clusters.{name}"
    with pytest.raises(ValueError, match="unknown backend 'nomad'"):
        backend_class("nomad")


@pytest.mark.parametrize("backend,conf,cluster", [
    ("local", {"slots": 3}, None),
    ("existing", {"scheduler": "slurm", "queue": "gpu", "one_per_host": True}, None),
    ("parallelcluster", {"cluster": PCLUSTER, "storage_root": "s3://imaging-projects"},
     {"head_node_ip": "10.0.0.5", "head_node_host_key": "ssh-ed25519 AAAAC3Nz"}),
])
def test_the_options_a_plan_keeps_make_the_same_backend_in_run_array(backend, conf, cluster, s3_allowed):
    planned = backend_class(backend).for_run(cfg_of(backend, **conf), cluster)
    opts = json.loads(json.dumps(planned.options_for(planned.cfg, cluster)))   # the manifest is JSON
    again = get_backend(backend, **opts)
    assert type(again) is type(planned) and again.python == planned.python
    assert type(again.scheduler("/tmp/w")) is type(planned.scheduler("/tmp/w"))
    if backend == "parallelcluster":
        assert again.host == "10.0.0.5" and again.host_key.startswith("ssh-ed25519")
    if backend == "existing":
        assert opts["scheduler_options"] == {"partition": "gpu", "account": None, "exclusive": False, "gres": "fiji:1"}


def test_where_the_run_folder_is_on_the_cluster(monkeypatch, tmp_path, s3_allowed):
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(tmp_path))
    run_dir = tmp_path / "p" / "output" / "r1"
    local = backend_class("local").for_run(cfg_of("local"))
    assert local.cluster_path(run_dir) == str(run_dir) and local.shares_files and not local.group_writable
    existing = backend_class("existing").for_run(cfg_of("existing", cluster_storage_root="/nfs/projects"))
    assert existing.cluster_path(run_dir) == "/nfs/projects/p/output/r1" and existing.group_writable
    monkeypatch.setenv("SCIOPS_WORK_ROOT", str(tmp_path / "work"))
    pc = backend_class("parallelcluster").for_run(cfg_of("parallelcluster", cluster=PCLUSTER,
                                                         storage_root="s3://imaging-projects"))
    assert not pc.shares_files
    assert pc.cluster_path(tmp_path / "work" / "p" / "output" / "r1") == "/shared/sciops/p/output/r1"


def test_cost_estimates_and_budget_rates(s3_allowed):
    existing = backend_class("existing").for_run(cfg_of("existing", hourly_rate_usd=0.5, budget_usd=10.0))
    est = existing.estimate(3600, 2.0)   # 2 task-hours; the cluster's concurrency is not known: one at a time
    assert est["cost_usd"] == 1.0 and est["duration_s"] == 7200.0
    assert backend_class("local").for_run(cfg_of("local", slots=4)).estimate(3600, 2.0)["duration_s"] == 1800.0
    assert existing.budget_rates(Path("/nonexistent"))["task_rate_usd_per_hour"] == 0.5
    assert backend_class("local").for_run(cfg_of("local")).budget_rates(Path("/nonexistent")) is None
    pc = backend_class("parallelcluster").for_run(cfg_of("parallelcluster", cluster=PCLUSTER, budget_usd=50.0,
                                                         storage_root="s3://imaging-projects"))
    est = pc.estimate(3600, 2.0)
    assert est["nodes"] == 2 and est["instance_type"] == "c5.xlarge" and est["cost_usd"] > 0
    rates = pc.budget_rates(Path("/nonexistent"))
    assert rates["fixed_rate_usd_per_hour"] > 0 and rates["task_rate_usd_per_hour"] > 0
    assert "ParallelCluster in eu-west-1: c5.xlarge × up to 2" in pc.where()
    assert existing.where() == "existing sge cluster via sciops_cluster"


def test_parallelcluster_settings_name_the_field(monkeypatch, tmp_path, s3_allowed):
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", str(tmp_path))
    on_a_folder = backend_class("parallelcluster").for_run(cfg_of("parallelcluster", cluster=PCLUSTER))
    with pytest.raises(ConfigError) as err:
        on_a_folder.check_settings("p", "manual__1")
    assert err.value.fields == ["storage_root"]
    missing = backend_class("parallelcluster").for_run(
        cfg_of("parallelcluster", cluster={"region": "eu-west-1", "compute_instance_type": "c5.large"},
               storage_root="s3://imaging-projects"))
    with pytest.raises(ConfigError) as err:
        missing.check_settings("p", "manual__1")
    assert err.value.fields == ["cluster.subnet_id", "cluster.key_name", "cluster.custom_ami"]
    tiny = backend_class("parallelcluster").for_run(
        cfg_of("parallelcluster", cluster={**PCLUSTER, "compute_instance_type": "c5.large"}, memory="8G",
               storage_root="s3://imaging-projects"))
    with pytest.raises(ConfigError) as err:
        tiny.check_settings("p", "manual__1")
    assert err.value.fields == ["memory"]


def test_backends_and_phases_load_without_airflow_or_ssh_libraries():
    """The backend classes and the task bodies are plain Python: Airflow is only in dags/ and operators/."""
    code = ("import sys; import sciops.clusters.local, sciops.clusters.existing, sciops.clusters.parallelcluster, "
            "sciops.phases.checks, sciops.phases.plan, sciops.phases.transfer, sciops.phases.record; "
            "print([m for m in ('airflow', 'paramiko', 'asyncssh') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "plugins")})
    assert out.stdout.strip() == "[]"


def test_the_head_nodes_aws_s3_sync_retries_slowdowns_and_every_word_is_quoted(monkeypatch, tmp_path, s3_allowed):
    """stage_in and stage_out run ``env AWS_MAX_ATTEMPTS=10 AWS_RETRY_MODE=standard aws s3 sync ...`` on the head
    node: the AWS CLI's standard retry mode with 10 attempts, in the command's own environment, quoted."""
    import shlex
    from types import SimpleNamespace

    from sciops.arrays.commands import CommandResult, shell_join

    monkeypatch.setenv("SCIOPS_WORK_ROOT", str(tmp_path / "work"))
    backend = backend_class("existing").for_run(cfg_of("existing", storage_root="s3://imaging-projects",
                                                       cluster_storage_root="/nfs/projects"))
    sent = []

    class HeadNode:   # the runner: what reaches the remote shell is shell_join(argv), as SSHRunner sends it
        def run(self, argv, **kw):
            sent.append(shell_join(argv))
            return CommandResult(argv, 0, "", "")

    backend._runner = HeadNode()
    storage = SimpleNamespace(region="eu-west-1", endpoint_url="http://s3.local:9000",
                              uri=lambda *parts: "s3://imaging-projects/" + "/".join(parts))
    root = tmp_path / "work" / "lab's proj"   # (a project name cannot hold these: the quoting can)
    info = SimpleNamespace(project="lab's proj", project_root=str(root), run_id="r 1",
                           run_dir=str(root / "output/r 1"))
    backend.stage_in(storage, info)
    backend.stage_out(storage, info)
    assert len(sent) == 2
    for line in sent:
        argv = shlex.split(line)   # what the remote shell makes of it: the words as given, none split or expanded
        assert argv[:6] == ["env", "AWS_MAX_ATTEMPTS=10", "AWS_RETRY_MODE=standard", "aws", "s3", "sync"]
        assert argv[-6:] == ["--only-show-errors", "--no-progress", "--region", "eu-west-1", "--endpoint-url",
                             "http://s3.local:9000"]
    assert shlex.split(sent[0])[6:8] == ["s3://imaging-projects/lab's proj/", "/nfs/projects/lab's proj/"]
    assert shlex.split(sent[1])[6:8] == ["/nfs/projects/lab's proj/output/r 1/",
                                         "s3://imaging-projects/lab's proj/output/r 1/"]
    assert "'/nfs/projects/lab'\"'\"'s proj/'" in sent[0]    # shlex.quote's quoting of the quote
