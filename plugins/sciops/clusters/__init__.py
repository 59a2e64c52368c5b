"""Cluster backends: where array jobs run. ``local``, ``existing``, ``parallelcluster``.

Once a ParallelCluster exists it is driven exactly like an existing Slurm cluster, through
its head node's address (the ``host`` option); creating and deleting it is the job of the
``create_cluster`` / ``delete_cluster`` tasks (``sciops.operators.cluster``).
"""
from __future__ import annotations

from sciops.clusters.base import ClusterBackend


def get_backend(name: str, **options) -> ClusterBackend:
    if name == "local":
        from sciops.clusters.local import LocalBackend

        return LocalBackend(**options)
    if name in ("existing", "parallelcluster"):
        from sciops.clusters.existing import ExistingBackend

        backend = ExistingBackend(**options)
        backend.name = name
        return backend
    raise ValueError(f"unknown backend {name!r}")


__all__ = ["ClusterBackend", "get_backend"]
