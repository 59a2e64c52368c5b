"""Cluster backends: where array jobs run. ``local``, ``existing``; ``parallelcluster`` later."""
from __future__ import annotations

from sciops.clusters.base import ClusterBackend


def get_backend(name: str, **options) -> ClusterBackend:
    if name == "local":
        from sciops.clusters.local import LocalBackend

        return LocalBackend(**options)
    if name == "existing":
        from sciops.clusters.existing import ExistingBackend

        return ExistingBackend(**options)
    raise ValueError(f"unknown backend {name!r}")


__all__ = ["ClusterBackend", "get_backend"]
