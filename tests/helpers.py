"""Things tests share that are not fixtures (imported as ``helpers``: tests/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Numbers worth seeing in every run's output; conftest prints them at the end.
REPORT: dict[str, str] = {}


def wrapping_macro(*clauses: str) -> str:
    """A project macro that runs count_nuclei, after ``clauses`` that misbehave on chosen images.

    Each clause is ImageJ macro code that may test ``input`` (the image's path), e.g.
    ``if (indexOf(input, "_slow.") >= 0) wait(5000);``.
    """
    head = ('// @sciops outputs: results.csv summary.csv\n'
            'lines = split(getArgument(), "\\n");\n'
            'input = "";\n'
            'for (i = 0; i < lines.length; i++) if (startsWith(lines[i], "input=")) input = substring(lines[i], 6);\n')
    count = REPO / "include" / "fiji_macros" / "count_nuclei.ijm"
    return head + "".join(c + "\n" for c in clauses) + f'runMacro("{count}", getArgument());\n'


def fresh_dag():
    """A new fiji_project DAG object: in-process dag.test() leaves one run's conf in the DAG's params."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags["fiji_project"]


def task_states(dr) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dr.get_task_instances()}


def wait_ended(sched, runner, job_id: str, tasks: list[int], timeout: float = 90) -> dict:
    """Poll ``sched`` until every task of ``job_id`` left the queue (finished or unknown): the states."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        states = sched.status(runner, job_id, tasks)
        if all(s.value == "unknown" or s.finished for s in states.values()):
            return states
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not end: {states}")


def get(base: str, path: str, token: str | None = None) -> tuple[int, str]:
    """GET ``base + path`` with a bearer token: ``(status, body)``, error statuses included."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def fill_up(folder: Path) -> int:
    """Write zeros into ``folder/ballast`` until its filesystem says it is full: the bytes written."""
    import errno

    written, block = 0, b"\0" * (1 << 16)
    with open(folder / "ballast", "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


def runner_manifest(tmp_path: Path, launcher: dict, macro_text: str, images: list[str], run_dir: Path | None = None,
                    macro_dir: Path | None = None, **kw) -> Path:
    """A one-task manifest for the real task runner (``sciops_task.main``) with ``macro_text`` as the macro:
    written to ``tmp_path/manifest.json``; the run folder is ``run_dir`` (default ``tmp_path``), the images in
    ``tmp_path/input``, the macro in ``macro_dir`` (default ``tmp_path``); ``kw`` overrides any key."""
    import json

    from sciops import JOB_DIR

    run_dir, macro_dir = run_dir or tmp_path, macro_dir or tmp_path
    macro_dir.mkdir(parents=True, exist_ok=True)
    (macro_dir / "macro.ijm").write_text(macro_text)
    manifest = {"run_id": "t", "work_dir": str(run_dir / "work"), "run_dir": str(run_dir),
                "input_dir": str(tmp_path / "input"), "macro_path": str(macro_dir / "macro.ijm"),
                "driver_path": str(JOB_DIR / "driver.ijm"), "chunks": [images], "expected_outputs": ["results.csv"],
                "launcher": launcher, "memory_mb": 1024, "image_timeout_s": 60, "stall_seconds": 30, "macro_args": {},
                **kw}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path
