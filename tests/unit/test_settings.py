"""sciops.settings: the one module that declares and reads the SCIOPS_* environment settings."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from sciops import settings
from sciops.settings import SETTINGS, SettingError, setting

REPO = Path(__file__).resolve().parents[2]
SETTINGS_PY = REPO / "plugins" / "sciops" / "settings.py"
#: An environment read of a SCIOPS_* variable written out (what must go through sciops.settings).
ENV_READ = re.compile(r"""(?:environ\.get|getenv)\(\s*f?["']SCIOPS_|environ\[\s*f?["']SCIOPS_""")
#: A variable name (not the tail of AIRFLOW_CONN_SCIOPS_..., an Airflow connection).
NAME = re.compile(r"\bSCIOPS_[A-Z0-9][A-Z0-9_]*\b")


def _code_files():
    for top in ("plugins", "dags"):
        yield from (p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


# -- the declarations, the code, the docs --------------------------------------------------------------
def test_docs_table_is_generated_from_the_declarations():
    doc = (REPO / "docs" / "settings.md").read_text()
    table = doc[doc.index(settings.DOC_BEGIN) + len(settings.DOC_BEGIN):doc.index(settings.DOC_END)]
    assert table == settings.docs_table(), \
        "docs/settings.md's table drifted from sciops.settings: run PYTHONPATH=plugins python -m sciops.settings"


def test_no_sciops_variable_is_read_from_the_environment_outside_settings():
    reads = [f"{p.relative_to(REPO)}:{n}: {line.strip()}"
             for p in _code_files() if p != SETTINGS_PY
             for n, line in enumerate(p.read_text().splitlines(), 1) if ENV_READ.search(line)]
    assert not reads, "read SCIOPS_* settings with sciops.settings.setting(), declared there:\n" + "\n".join(reads)


def test_every_setting_read_is_declared_and_every_declared_one_is_read():
    read = {m for p in _code_files() for m in re.findall(r"""\bsetting\(\s*["'](SCIOPS_\w+)["']""", p.read_text())}
    assert read - set(SETTINGS) == set(), "declare these in sciops.settings"
    assert set(SETTINGS) - read == set(), "declared but read nowhere: remove them from sciops.settings"


def test_settings_imports_only_the_standard_library():
    """DAG files import it while they are parsed: nothing heavy, nothing of sciops."""
    tree = ast.parse(SETTINGS_PY.read_text())
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_every_declaration_is_complete():
    for s in SETTINGS.values():
        assert s.name.startswith("SCIOPS_") and s.type in (str, float, list) and s.doc and s.section, s
        assert "\n" not in s.doc and "|" not in s.doc, f"{s.name}: one line, no '|' (a table cell)"
        assert s.shown or not callable(s.default), f"{s.name}: a computed default needs `shown` for the docs"
        assert s.type is str or not s.keep_empty, f"{s.name}: only text keeps an empty value"


def test_compute_node_variables_are_listed_in_the_docstring():
    """The task runner (stdlib-only) reads its own: named in sciops.settings' docstring and in docs/settings.md."""
    from sciops_node import hygiene

    text = "\n".join(p.read_text() for p in (REPO / "include" / "job").rglob("*.py"))
    node = set(re.findall(r"""environ(?:\.get\(|\[)\s*["'](SCIOPS_\w+)["']""", text))
    node |= {v for v in hygiene.TASK_ENV_VARS + hygiene.MACRO_ENV_ALLOW if v.startswith("SCIOPS_")}
    assert {"SCIOPS_TASK_ID", "SCIOPS_TASK_MAP", "SCIOPS_CHAIN", "SCIOPS_LOST", "SCIOPS_ATTEMPT"} <= node
    doc = (REPO / "docs" / "settings.md").read_text()
    for name in node:
        assert name in settings.__doc__ and f"`{name}`" in doc and name not in SETTINGS, name


def test_docs_settings_names_every_variable_the_repository_mentions():
    """docs/settings.md is the one place: any SCIOPS_* variable in the docs, compose, scripts or tests is in it."""
    driver = (REPO / "include" / "job" / "driver.ijm").read_text()
    # the driver's output lines (SCIOPS_<secret>_BEGIN ..., logged as SCIOPS_BEGIN), not variables
    tags = {"SCIOPS_" + kind for kind in re.findall(r'print\(tag \+ "(\w+)', driver)}
    agent = (REPO / "include" / "job" / "sciops_node" / "SciopsDialogs.java").read_text()
    tags |= set(re.findall(r'"(SCIOPS_\w+)\\t', agent))      # the dialog agent's output lines, likewise
    own = {"SCIOPS_REPO"}  # scripts/env.sh's own shell variable: the checkout
    files = [REPO / "README.md", REPO / "docker-compose.yaml", *(REPO / "docs").glob("*.md"),
             *(REPO / "docker").glob("*.sh"), *(REPO / "scripts").rglob("*.sh"), *(REPO / "tests").rglob("*.py")]
    files.remove(Path(__file__).resolve())  # its made-up names
    settings_md = (REPO / "docs" / "settings.md").read_text()
    missing = sorted({f"{n} ({p.relative_to(REPO)})" for p in files if "__pycache__" not in p.parts
                      for n in set(NAME.findall(p.read_text())) - tags - own if f"`{n}`" not in settings_md})
    assert not missing, "document these in docs/settings.md:\n" + "\n".join(missing)


# -- reading a value -------------------------------------------------------------------------------------
def test_unset_gives_the_declared_default_or_the_callers(monkeypatch, tmp_path):
    assert setting("SCIOPS_MIN_DEFER_SECONDS") == 15.0
    assert setting("SCIOPS_LEDGER_CONN_ID") == "sciops_ledger"
    assert setting("SCIOPS_ALLOWED_CONN_IDS") == []
    assert setting("SCIOPS_FIJI") is None
    assert setting("SCIOPS_POLL_SECONDS", 7) == 7
    assert setting("SCIOPS_STORAGE_ROOT", None) is None
    monkeypatch.setenv("HOME", str(tmp_path))  # a computed default is computed when read
    assert setting("SCIOPS_STORAGE_ROOT") == str(tmp_path / "sciops-projects")


def test_values_are_read_when_asked_and_parsed_to_their_type(monkeypatch):
    monkeypatch.setenv("SCIOPS_POLL_SECONDS", "2.5")
    assert setting("SCIOPS_POLL_SECONDS", 5.0) == 2.5
    monkeypatch.setenv("SCIOPS_POLL_SECONDS", " 0 ")
    assert setting("SCIOPS_POLL_SECONDS") == 0.0
    monkeypatch.setenv("SCIOPS_ALLOWED_STORAGE_ROOTS", "s3://a, /data/b ,,")
    assert setting("SCIOPS_ALLOWED_STORAGE_ROOTS") == ["s3://a", "/data/b"]
    monkeypatch.setenv("SCIOPS_SLACK_CONN_ID", "lab_slack")
    assert setting("SCIOPS_SLACK_CONN_ID") == "lab_slack"


def test_empty_is_unset_unless_the_setting_keeps_it(monkeypatch):
    for name in ("SCIOPS_LEDGER_CONN_ID", "SCIOPS_IJ_JAR", "SCIOPS_NIGHTLY_SCHEDULE", "SCIOPS_PASSWORD",
                 "SCIOPS_ALLOWED_CONN_IDS"):
        monkeypatch.setenv(name, "")
    assert setting("SCIOPS_LEDGER_CONN_ID") == "sciops_ledger"
    assert setting("SCIOPS_ALLOWED_CONN_IDS") == []
    assert setting("SCIOPS_IJ_JAR") == ""  # as os.environ.get(name, default) always had it
    assert setting("SCIOPS_NIGHTLY_SCHEDULE") == ""
    assert setting("SCIOPS_PASSWORD") == ""  # an empty password is tried, not asked for


@pytest.mark.parametrize("raw", ["abc", "", "5s"])
def test_a_bad_number_names_the_variable_and_the_type(monkeypatch, raw):
    monkeypatch.setenv("SCIOPS_HOSTKEY_WAIT_SECONDS", raw)
    with pytest.raises(SettingError, match=r"SCIOPS_HOSTKEY_WAIT_SECONDS=.*expected a number \(float, seconds\)"):
        setting("SCIOPS_HOSTKEY_WAIT_SECONDS")


def test_a_bad_number_stops_the_operator_that_reads_it(monkeypatch):
    from sciops.operators.run_array import FijiArrayOperator

    op = FijiArrayOperator(task_id="run_array", manifest_path="manifest.json", poll_seconds=3)
    assert op._poll() == 3.0
    monkeypatch.setenv("SCIOPS_POLL_SECONDS", "fast")
    with pytest.raises(ValueError, match="SCIOPS_POLL_SECONDS='fast': expected a number"):
        op._poll()


def test_an_undeclared_name_is_refused():
    with pytest.raises(KeyError, match="SCIOPS_NOPE is not a declared setting"):
        setting("SCIOPS_NOPE")


def test_call_sites_keep_their_defaults(monkeypatch, tmp_path):
    from sciops.run.config import allowed_storage_roots
    from sciops.storage.root import default_root, work_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", "")
    assert default_root() == str(tmp_path / "sciops-projects")
    assert work_root() == (tmp_path / "sciops-work").resolve()
    assert allowed_storage_roots() == []  # the home default is not one a run may name
    monkeypatch.setenv("SCIOPS_ALLOWED_STORAGE_ROOTS", "s3://lab/x/, ")
    monkeypatch.setenv("SCIOPS_STORAGE_ROOT", "/data/projects/")
    assert allowed_storage_roots() == ["/data/projects", "s3://lab/x"]
    monkeypatch.setenv("SCIOPS_ALLOWED_STORAGE_ROOTS", "file:///mnt/lab/")   # as a run's root is compared
    assert allowed_storage_roots() == ["/data/projects", "/mnt/lab"]
