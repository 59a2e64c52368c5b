"""RunInfo: the typed record of one run, made by ``validate`` and passed to every later task.

It travels between tasks as an XCom (JSON, :meth:`RunInfo.dump`) and is read back with
:meth:`RunInfo.of`, which checks it and gives the run's :class:`~sciops.run.config.RunConfig`
as ``info.config``: no task rebuilds the config from a dict by hand. ``info.backend()``
is the run's :class:`~sciops.clusters.base.ClusterBackend`, ``info.storage()`` its storage root.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from sciops.clusters import backend_class
from sciops.errors import ConfigError, StorageError
from sciops.run import config as config_mod
from sciops.storage.root import get_storage, work_root


class RunInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    airflow_run_id: str
    project: str
    #: The project's working copy on this worker (the storage root's folder, or the S3 staging copy).
    project_root: str
    run_dir: str
    config: config_mod.RunConfig
    #: Parameters the run or project.yaml set (``run`` / ``project.yaml``); the rest are built-in defaults.
    config_sources: dict[str, str] = {}
    images: int
    macro_path: str
    macro_sha256: str
    launcher: dict[str, Any]
    imagej_version: str | None = None
    estimate: dict[str, Any] | None = None

    @classmethod
    def of(cls, info: RunInfo | dict[str, Any]) -> RunInfo:
        """A run record from an XCom (its JSON dict) or as it is."""
        return info if isinstance(info, RunInfo) else cls.model_validate(info)

    def dump(self) -> dict[str, Any]:
        """The XCom form (JSON types only)."""
        return self.model_dump(mode="json")

    def backend(self, cluster: dict[str, Any] | None = None):
        """The run's cluster backend (``cluster``: what ``create_cluster`` returned). Close it after use."""
        return backend_for(self.config, cluster)

    def storage(self):
        return storage_for(self.config)


def backend_for(cfg: config_mod.RunConfig, cluster: dict[str, Any] | None = None):
    return backend_class(cfg.backend).for_run(cfg, cluster)


def storage_for(conf: dict[str, Any] | config_mod.RunConfig):
    """The run's storage root (``storage_root`` / ``aws_conn_id``, else the environment's)."""
    get = conf.get if isinstance(conf, dict) else lambda k: getattr(conf, k)
    refused = config_mod.deployment_problems({k: get(k) for k in ("storage_root", "aws_conn_id")})
    if refused:  # before the root is opened: a refused root is never listed
        raise ConfigError(refused)
    try:
        return get_storage(get("storage_root"), get("aws_conn_id"))
    except StorageError as exc:
        raise ConfigError([("storage_root", str(exc))]) from None


def local_root(cfg: config_mod.RunConfig) -> Path:
    """The folder on this machine that holds the projects runs work in (and the cluster mounts)."""
    storage = storage_for(cfg)
    return storage.root if storage.is_local else work_root()
