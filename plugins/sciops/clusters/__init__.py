"""Cluster backends: where array jobs run. One module per backend, named as the ``backend`` parameter.

``sciops.clusters.<name>`` defines ``Backend``, a :class:`ClusterBackend`: ``local`` (this
worker), ``existing`` (a lab's Grid Engine or Slurm cluster over SSH), ``parallelcluster``
(an AWS cluster made for the run, driven like an existing Slurm cluster once it exists).
Adding a backend is adding its module and its name to ``sciops.run.config.BACKENDS``.
"""
from __future__ import annotations

import importlib

from sciops.clusters.base import ClusterBackend


def backend_class(name: str) -> type[ClusterBackend]:
    from sciops.run.config import BACKENDS

    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return importlib.import_module(f"sciops.clusters.{name}").Backend


def get_backend(name: str, **options) -> ClusterBackend:
    """A backend from the options a plan kept in its manifest (``run_array``: runner and scheduler)."""
    return backend_class(name)(**options)


__all__ = ["ClusterBackend", "backend_class", "get_backend"]
