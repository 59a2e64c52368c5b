"""Cluster backends: where array jobs run. ``local`` now; ``existing`` and ``parallelcluster`` later."""
from __future__ import annotations

from sciops.clusters.base import ClusterBackend


def get_backend(name: str, **options) -> ClusterBackend:
    if name == "local":
        from sciops.clusters.local import LocalBackend

        return LocalBackend(**options)
    raise ValueError(f"unknown backend {name!r}")


__all__ = ["ClusterBackend", "get_backend"]
