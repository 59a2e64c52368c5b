"""The backend registry (``sciops.clusters``): the backends declare themselves, the rest asks them.

A backend is its module and its name in ``sciops.clusters.MODULES``: the run parameters (the
``backend`` enum, each backend's schedulers, the form sections that apply to it) follow
from its class, with no edit to ``sciops.run.config``.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO
from sciops import clusters
from sciops.arrays.schedulers import SCHEDULER_CLASSES
from sciops.run import config


def test_the_registry_gives_the_parameters_their_backends():
    classes = clusters.backend_classes()
    assert tuple(classes) == clusters.MODULES == clusters.BACKENDS == config.BACKENDS
    assert config.SCHEDULERS == clusters.SCHEDULERS == {n: c.schedulers for n, c in classes.items()}
    assert config.SECTION_BACKENDS == clusters.SECTION_BACKENDS == {
        "Local backend": ("local",), "Existing cluster (SSH)": ("existing", "parallelcluster"),
        "ParallelCluster": ("parallelcluster",)}
    assert clusters.backend_class("existing") is classes["existing"]
    with pytest.raises(AttributeError):
        clusters.NOT_A_TABLE  # noqa: B018


@pytest.mark.parametrize("name", clusters.MODULES)
def test_each_backend_declares_what_the_parameters_need(name):
    cls = clusters.backend_class(name)
    assert cls.schedulers and set(cls.schedulers) <= set(SCHEDULER_CLASSES), cls.schedulers
    assert cls.form_sections and set(cls.form_sections) <= set(config.SECTIONS), cls.form_sections
    assert isinstance(cls.priced_per_instance_type, bool)
    # a run that names no scheduler gets the backend's first
    cfg = config.build({"project": "p", "backend": name})
    assert cfg.scheduler == cls.schedulers[0]


TOY = '''
from sciops.clusters.base import ClusterBackend


class ToyBackend(ClusterBackend):
    """A PBS cluster, say, reached like an existing one."""

    name = "toy"
    schedulers = ("pbs", "slurm")
    form_sections = ("Existing cluster (SSH)",)


Backend = ToyBackend
'''

CHECK = '''
import json, sys

import sciops.clusters as registry

registry.__path__.append(sys.argv[1])          # the toy module sits beside the others
registry.MODULES = (*registry.MODULES, "toy")  # and is registered: nothing else is edited
from sciops.errors import ConfigError
from sciops.run import config, form

params = form.form_params()
out = {"backends": list(config.BACKENDS), "enum": params["backend"][1]["enum"],
       "scheduler_enum": params["scheduler"][1]["enum"], "sections": config.SECTION_BACKENDS,
       "scheduler": config.build({"project": "p", "backend": "toy", "queue": "q1"}).scheduler}
for conf in ({"scheduler": "sge"}, {"slots": 3}):
    try:
        config.build({"project": "p", "backend": "toy", **conf})
    except ConfigError as exc:
        out.setdefault("refused", []).append(exc.problems)
print(json.dumps(out))
'''


def test_a_backend_module_added_to_the_registry_reaches_the_form(tmp_path):
    (tmp_path / "toy.py").write_text(TOY)
    out = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path)], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "plugins")})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["backends"] == seen["enum"] == ["local", "existing", "parallelcluster", "toy"]
    assert seen["scheduler_enum"] == [None, "sge", "slurm", "pbs"]   # toy offers a choice: the form does too
    assert seen["sections"]["Existing cluster (SSH)"] == ["existing", "parallelcluster", "toy"]
    assert seen["scheduler"] == "pbs"                                # its first, when the run names none
    (wrong_scheduler,), (local_field,) = seen["refused"]
    assert wrong_scheduler[0] == "scheduler" and "choose one of: pbs, slurm" in wrong_scheduler[1]
    assert local_field[0] == "slots" and "for the local backend" in local_field[1]


# -- nothing outside sciops/clusters/ compares a backend's name -------------------------------------
#: Comparisons still allowed outside clusters/: none (the planner asks the registry since the web split).
PENDING: set[tuple[str, str]] = set()


def backend_name_uses(source: str, names) -> list[tuple[int, str]]:
    """Where ``source`` compares a value to a backend name, or names a backend where one is chosen.

    Comparisons (``==``, ``!=``, ``in (...)``, ``match``/``case``), a ``"backend": <name>`` dict
    entry and a ``backend=<name>`` argument. A default value (``Query("local")``) is not one.
    """
    import ast

    def is_name(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(is_name(e) for e in node.elts)

    found = []
    for node in ast.walk(ast.parse(source)):
        hit = ((isinstance(node, ast.Compare) and any(is_name(n) for n in (node.left, *node.comparators)))
               or (isinstance(node, ast.MatchValue) and is_name(node.value))
               or (isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "backend"
                                                      and is_name(v) for k, v in zip(node.keys, node.values)))
               or (isinstance(node, ast.keyword) and node.arg == "backend" and is_name(node.value)))
        if hit:
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_name_check_finds_what_it_looks_for():
    names = ("local", "parallelcluster")
    source = '''
if cfg.backend == "local": pass
if "parallelcluster" != backend: pass
if backend in ("existing", "local"): pass
match backend:
    case "parallelcluster": pass
manifest = {"launcher": None, "backend": "local"}
estimate(1, 2.0, backend="parallelcluster")
def planner(backend: str = Query("parallelcluster"), other="local"): return backend
x = cfg.scheduler == "slurm"
'''
    assert sorted(line for line, _ in backend_name_uses(source, names)) == [2, 3, 4, 6, 7, 8]


def test_nothing_outside_clusters_compares_a_backend_name():
    plugins = REPO / "plugins"
    found = []
    for path in sorted(plugins.rglob("*.py")):
        rel = path.relative_to(plugins)
        # the backends themselves; and the schedulers, where "local" is a scheduler's name
        if rel.parts[:2] == ("sciops", "clusters") or rel.parts[:3] == ("sciops", "arrays", "schedulers"):
            continue
        found += [(str(rel), line, code) for line, code in backend_name_uses(path.read_text(), clusters.BACKENDS)
                  if (str(rel), code) not in PENDING]
    assert not found, ("ask the backend (sciops.clusters: its class attributes and methods) instead of comparing "
                       f"its name: {found}")
