"""Cluster backends: where array jobs run, and the one registry of them.

``sciops.clusters.<name>`` defines ``Backend``, a :class:`~sciops.clusters.base.ClusterBackend`
named as the ``backend`` parameter's value: ``local`` (this worker), ``existing`` (a lab's
Grid Engine or Slurm cluster over SSH), ``parallelcluster`` (an AWS cluster made for the run,
driven like an existing Slurm cluster once it exists).

Adding a backend is adding its module and its name to :data:`MODULES`. What the rest of
SciOps knows of the backends comes from their classes, through here: the ``backend``
parameter's values (:data:`BACKENDS`), the schedulers each drives (:data:`SCHEDULERS`, the
first its default), the form sections whose fields apply to it (:data:`SECTION_BACKENDS`);
nothing outside this package compares a backend's name.

The modules are imported when the registry is first asked (``BACKENDS``, :func:`backend_class`),
not with this package. ``sciops.run.config`` asks at import, so the DAG's form is built from
them at every parse: their top-level imports stay light (no SSH, AWS or YAML libraries).
"""
from __future__ import annotations

import importlib
from functools import cache
from types import MappingProxyType
from typing import Any

#: The backend modules under ``sciops.clusters``, in the order the form lists them.
MODULES: tuple[str, ...] = ("local", "existing", "parallelcluster")
#: The tables made from the classes, read as module attributes (``from sciops.clusters import BACKENDS``).
TABLES = ("BACKENDS", "SCHEDULERS", "SECTION_BACKENDS")


@cache
def backend_classes() -> MappingProxyType:
    """Backend name → its ``Backend`` class (a ClusterBackend), in :data:`MODULES`' order. Read once."""
    out = {}
    for module in MODULES:
        cls = importlib.import_module(f"{__name__}.{module}").Backend
        if cls.name != module:
            raise TypeError(f"{cls.__module__}.Backend is named {cls.name!r}: a backend is named as its module")
        out[module] = cls
    return MappingProxyType(out)


def backend_class(name: str) -> type:
    """The ClusterBackend class of the backend called ``name``; ValueError naming the known ones."""
    classes = backend_classes()
    if name not in classes:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(classes)}")
    return classes[name]


def instance_priced_backend() -> type:
    """The backend priced per instance type (the planner's instance types × node counts)."""
    return next(cls for cls in backend_classes().values() if cls.priced_per_instance_type)


def get_backend(name: str, **options) -> Any:
    """A backend from the options a plan kept in its manifest (``run_array``: runner and scheduler)."""
    return backend_class(name)(**options)


@cache
def _tables() -> dict[str, Any]:
    classes = backend_classes()
    sections: dict[str, tuple[str, ...]] = {}
    for name, cls in classes.items():
        for section in cls.form_sections:
            sections[section] = (*sections.get(section, ()), name)
    return {"BACKENDS": tuple(classes),
            "SCHEDULERS": {name: tuple(cls.schedulers) for name, cls in classes.items()},
            "SECTION_BACKENDS": sections}


def __getattr__(attr: str) -> Any:
    """``BACKENDS`` (names), ``SCHEDULERS`` (name → schedulers, the first the default) and
    ``SECTION_BACKENDS`` (form section → the backends its fields apply to), made on first use."""
    if attr in TABLES:
        return _tables()[attr]
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


__all__ = ["MODULES", *TABLES, "backend_class", "backend_classes", "get_backend", "instance_priced_backend"]
