"""The ``sciops`` command: what a scientist does from a LAN machine, start to finish.

    sciops init DIR                     a project folder: input/, src/ with a sample macro, project.yaml
    sciops sync up DIR [--project P]    the folder → the storage root (output/ stays behind)
    sciops run P [-p key=value]... [--wait]
                                        trigger fiji_project through Airflow's REST API; --wait shows
                                        images done/failed, ETA and spend, and exits 1 if the run failed
    sciops status [P] [RUN_ID]          runs: state, images, duration, cost, report link
    sciops results P [RUN_ID] [--to DIR]
                                        a run's output/<run_id>/ (the latest by default) → DIR
    sciops logs P RUN_ID                failures.csv and the failed tasks' logs
    sciops sync down P RUN_ID DIR       output/<run_id>/ → DIR/output/<run_id>/
    sciops ls [P]                       the projects in the storage root, or the runs of P

A run is named as ``run`` and ``status`` print it (Airflow's run id) or by its folder under
``output/``: both work everywhere a RUN_ID is asked for (:mod:`sciops.cli.runs`).

``python -m sciops`` is the same command. The REST client is :mod:`sciops.cli.api`, the settings
and the errors :mod:`sciops.cli.settings`, ``--wait`` :mod:`sciops.cli.follow`.

Settings come from flags, else the environment (``SCIOPS_API_URL``, ``SCIOPS_USER``,
``SCIOPS_PASSWORD``, ``SCIOPS_STORAGE_ROOT``, ``SCIOPS_AWS_CONN_ID``), else
``~/.config/sciops/config.toml`` or ``$SCIOPS_CONFIG`` (``api_url``, ``user``, ``storage_root``, ``conn_id``,
``profile``; never a password). Without a storage root the command asks Airflow for its own; S3 is reached
with an AWS profile (``--profile``: the AWS credential chain) unless an Airflow connection is named
(:mod:`sciops.cli.storage`). Without ``SCIOPS_PASSWORD`` the password is asked for, not echoed, and never
written anywhere. Exit status: 0 done; 1 the run or a transfer failed; 2 bad input (a field,
a storage root, project or run that does not exist; click's own usage errors); 3 Airflow cannot be reached or
refused the login.

Built on Typer (Click) for the command line, Rich for tables and the progress bar, and httpx
for the REST calls: all three already come with Airflow.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from sciops.cli.api import DAG_ID, Airflow
from sciops.cli.settings import EXIT_BAD_INPUT, EXIT_FAILED, Stop, settings
from sciops.cli.terminal import shown
from sciops_node import contract

# Imports inside functions here are deliberate: `sciops --help` and one-line errors should answer at once;
# each command imports the storage, sync or progress code it needs when it runs.

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run Fiji/ImageJ macros over a project's images with SciOps (Airflow).")
sync_app = typer.Typer(no_args_is_help=True, help="Copy a project up to the storage root, or a run's results down.")
app.add_typer(sync_app, name="sync")


API_URL = typer.Option(None, "--api-url", help="Airflow's URL (default: $SCIOPS_API_URL, the config file, "
                                               "http://localhost:8080)")
USER = typer.Option(None, "--user", help="Airflow user (default: $SCIOPS_USER, the config file, airflow)")
ROOT = typer.Option(None, "--storage-root",
                    help="s3://bucket, s3://bucket/prefix or a folder (default: $SCIOPS_STORAGE_ROOT, the config "
                         "file, else Airflow's own)")
CONN = typer.Option(None, "--conn-id", help="an Airflow AWS connection for S3 (default: $SCIOPS_AWS_CONN_ID, the "
                                            "config file; else the AWS credential chain)")
PROFILE = typer.Option(None, "--profile", help="an AWS profile for S3, as the AWS CLI's (default: the config file's "
                                               "profile, $AWS_PROFILE, the default profile)")
WORKERS = typer.Option(16, "--workers", min=1, help="parallel transfers")
QUIET = typer.Option(False, "--quiet", "-q", help="only the summary line (no progress lines on stderr)")
INSECURE = typer.Option(False, "--insecure-http", help="allow a plain http --api-url to another machine (the "
                                                       "password then crosses the network in clear)")


# -- the commands --------------------------------------------------------------------------------------
SAMPLE_YAML = """\
# Run defaults for this project: any run parameter (see the README's table), except where the
# project lives. A value given when the run is triggered wins over these.
macro: src/my_macro.ijm       # a macro in src/, or a shipped one (count_nuclei)
file_pattern: "*.tif,*.tiff"  # which files under input/ are images
images_per_task: 0            # images per array task (one JVM each); 0 = auto
memory: 2G                    # per task
# backend: existing           # local (default), existing (a cluster over SSH), parallelcluster
# nightly: true               # run the macro over new images every night (fiji_nightly)
"""


@app.command()
def init(folder: Path = typer.Argument(..., help="the new project folder (its name is the project's)")):
    """Make a project folder: input/ for the images, src/ with a sample macro, a commented project.yaml."""
    from sciops import MACRO_DIR
    from sciops.run.names import SAFE_NAME

    folder = folder.expanduser()
    if not SAFE_NAME.match(folder.name):
        raise Stop(f"{folder.name!r} cannot be a project name: use letters, digits, '.', '_' or '-'")
    if folder.exists() and any(folder.iterdir()):
        raise Stop(f"{folder} exists and is not empty: give a new folder")
    for part in ("input", "src", "bin"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    macro = (Path(MACRO_DIR) / "count_nuclei.ijm").read_text()
    (folder / "src" / "my_macro.ijm").write_text("// A sample: count_nuclei, shipped with SciOps. Edit it, or put "
                                                 "your own macros here.\n" + macro)
    (folder / "project.yaml").write_text(SAMPLE_YAML)
    typer.echo(f"made {folder}: put the images in {folder / 'input'}, then: sciops sync up {folder}")


@sync_app.command("up")
def sync_up(folder: Path = typer.Argument(..., help="the project folder on this machine"),
            project: Optional[str] = typer.Option(None, help="its name in the storage root (default: the folder's)"),
            delete: bool = typer.Option(False, help="delete files in the storage root that are not here"),
            verify: bool = typer.Option(False, help="list the bucket instead of trusting the last sync's manifest"),
            storage_root: Optional[str] = ROOT, conn_id: Optional[str] = CONN, profile: Optional[str] = PROFILE,
            workers: int = WORKERS, quiet: bool = QUIET, api_url: Optional[str] = API_URL, user: Optional[str] = USER,
            insecure_http: bool = INSECURE):
    """Send the project folder to the storage root (output/ stays here); only what changed travels."""
    from sciops.run.names import SAFE_NAME
    from sciops.storage.sync import summary_lines, sync_up as run_sync_up

    name = project or folder.expanduser().resolve().name
    if not SAFE_NAME.match(name):
        raise Stop(f"{name!r} cannot be a project name: use letters, digits, '.', '_' or '-' (give --project)")
    storage = _storage(settings(api_url, user, storage_root, conn_id, insecure_http, profile))
    stats = run_sync_up(storage, folder, name, delete=delete, verify=verify, workers=workers,
                        emit=_progress_lines(quiet))
    typer.echo(shown("\n".join(summary_lines(stats)), lines=True))


@sync_app.command("down")
def sync_down(project: str, run_id: str, folder: Path, storage_root: Optional[str] = ROOT,
              conn_id: Optional[str] = CONN, profile: Optional[str] = PROFILE, workers: int = WORKERS,
              quiet: bool = QUIET, api_url: Optional[str] = API_URL, user: Optional[str] = USER,
              insecure_http: bool = INSECURE):
    """Fetch a run's output/<run_id>/ into FOLDER/output/<run_id>/ (nothing else there is touched).
    RUN_ID as `sciops status` prints it, or the run's folder name."""
    from sciops.cli.runs import missing_run, project_storage, run_folder
    from sciops.storage.sync import summary_lines, sync_down as run_sync_down

    storage = project_storage(_storage(settings(api_url, user, storage_root, conn_id, insecure_http, profile)),
                              project)
    found = run_folder(storage, project, run_id)
    if found is None:
        raise missing_run(storage, project, run_id)
    stats = run_sync_down(storage, project, found, folder, workers=workers, emit=_progress_lines(quiet))
    typer.echo(shown("\n".join(summary_lines(stats)), lines=True))


def _progress_lines(quiet: bool):
    """Where a sync's progress lines go: stderr (every few seconds and at the end), or nowhere."""
    return (lambda line: None) if quiet else (lambda line: typer.echo(shown(line), err=True))


@app.command("ls")
def ls(project: Optional[str] = typer.Argument(None, help="list this project's runs instead of the projects"),
       storage_root: Optional[str] = ROOT, conn_id: Optional[str] = CONN, profile: Optional[str] = PROFILE,
       api_url: Optional[str] = API_URL, user: Optional[str] = USER, insecure_http: bool = INSECURE):
    """The projects in the storage root, or the runs (output/<run_id>/) of PROJECT."""
    from sciops.cli.runs import project_storage

    storage = _storage(settings(api_url, user, storage_root, conn_id, insecure_http, profile))
    if project:
        project_storage(storage, project)
    names = storage.runs(project) if project else storage.projects()
    if names:
        typer.echo("\n".join(shown(n) for n in names))


@app.command()
def run(project: str,
        param: list[str] = typer.Option([], "--param", "-p", help="key=value, e.g. -p images_per_task=10 "
                                                                  "(values as YAML: 10, true, '{a: 1}')"),
        wait: bool = typer.Option(False, help="follow the run: images, ETA, spend; exit 1 if it failed"),
        storage_root: Optional[str] = ROOT, conn_id: Optional[str] = CONN, profile: Optional[str] = PROFILE,
        api_url: Optional[str] = API_URL, user: Optional[str] = USER, insecure_http: bool = INSECURE):
    """Trigger fiji_project for PROJECT (its project.yaml's settings, with -p over them). A storage root given
    here (not Airflow's own) goes to the run as its storage_root when Airflow allows it."""
    conf: dict[str, Any] = {"project": project}
    for item in param:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise Stop(f"--param {shown(item)[:100]!r}: write it as key=value")
        if key == "project":   # checked above as the argument: a -p must not replace it after the check
            raise Stop(f"--param {shown(item)[:100]!r}: the project is the command's argument (sciops run PROJECT); "
                       "it cannot be given again with -p")
        conf[key] = _param_value(key, value)
    from sciops.cli.storage import run_root

    s = settings(api_url, user, storage_root, conn_id, insecure_http, profile)
    if s.storage_root and "storage_root" not in conf:   # known here: say so now rather than through a refused run
        storage = _storage(s)
        if project not in storage.projects():
            raise Stop(f"no project {project!r} in {storage.url}; sync it up first (sciops sync up FOLDER) or fix "
                       "the name")
    af = Airflow(s)
    run_root(af, s, conf)
    started = af.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    run_id = started["dag_run_id"]
    typer.echo(f"started {shown(run_id)}\nreport: {shown(af.report_url(run_id))}")
    if wait:
        from sciops.cli.follow import follow

        state = follow(af, run_id)
        if state != "success":
            raise Stop(f"run {run_id} {state}: see `sciops logs {project} {run_id}` and the report", EXIT_FAILED)


def _param_value(key: str, value: str) -> Any:
    """A ``-p`` value read as YAML within project.yaml's bounds (sciops.run.bounded); text if it is not YAML."""
    import yaml

    from sciops.run.bounded import MAX_YAML_BYTES, BoundedLoader, Refused

    if len(value.encode()) > MAX_YAML_BYTES:
        raise Stop(f"--param {shown(key)[:64]}: the value is {len(value.encode()):,} bytes, more than the "
                   f"{MAX_YAML_BYTES:,} accepted")
    if not value.strip():
        return None
    try:
        return yaml.load(value, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader, bounded
    except Refused as exc:
        raise Stop(f"--param {shown(key)[:64]}: {exc.problem}") from None
    except yaml.YAMLError:
        return value


@app.command()
def status(project: Optional[str] = typer.Argument(None),
           run_id: Optional[str] = typer.Argument(None, help="one run: as printed, or its folder name"),
           limit: int = typer.Option(20, help="runs shown"),
           api_url: Optional[str] = API_URL, user: Optional[str] = USER, insecure_http: bool = INSECURE):
    """Runs (of PROJECT): state, images, duration (the DAG run's start to its end), cost, then each run's report
    link, whole. Runs still going come first."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from sciops.cli.runs import status_rows
    from sciops.reporting.durations import duration

    af = Airflow(settings(api_url, user, insecure_http=insecure_http))
    rows = status_rows(af, project, run_id, limit)
    if not rows and (project or run_id):
        what = f"run {run_id!r}" if run_id else "run"
        raise Stop(f"Airflow knows no {shown(what)} of project {shown(project)!r}; `sciops status` lists every "
                   "project's runs, `sciops ls` the projects")
    table = Table("run", "project", "state", "images ok/failed/total", "duration", "cost USD")
    for r in rows:   # plain text: no escape sequence, no Rich markup, from a name
        table.add_row(*[Text(shown(c)) for c in (r["run"], r["project"], r["state"], r["images"],
                                                 duration(r["seconds"]), r["cost"])])
    console = Console(width=200)
    console.print(table)
    for r in rows:   # links on lines of their own: never cut to fit a column, clickable in a terminal
        typer.echo(shown(f"report {r['run']}: {af.report_url(r['run'])}"))
        if r.get("reason") and r["state"] != "success":
            typer.echo(shown(f"  why {r['state']}: {r['reason']}"))


@app.command()
def results(project: str, run_id: Optional[str] = typer.Argument(None, help="default: the newest run"),
            to: Path = typer.Option(Path("."), help="the project folder here: results land in TO/output/<run_id>/"),
            fetch: bool = typer.Option(True, help="copy the run's folder here (--no-fetch: only print its summary)"),
            open_report: bool = typer.Option(False, "--open", help="open the fetched report.html in a browser"),
            storage_root: Optional[str] = ROOT, conn_id: Optional[str] = CONN, profile: Optional[str] = PROFILE,
            api_url: Optional[str] = API_URL, user: Optional[str] = USER, insecure_http: bool = INSECURE):
    """A run's results: what the macro measured (medians, outliers, warnings), and its folder fetched
    (output/<run_id>/: tables, overlays, run.json, report.html) from the storage root."""
    from sciops.cli import results as summary
    from sciops.cli.runs import missing_run, project_storage
    from sciops.run.project import safe_run_id
    from sciops.storage.sync import summary_lines, sync_down as run_sync_down

    storage = project_storage(_storage(settings(api_url, user, storage_root, conn_id, insecure_http, profile)),
                              project)
    runs = storage.runs(project)
    if run_id is None:
        done = [r for r in runs if storage.exists(project, "output", r, "run.json")]
        if not done:
            raise Stop(f"project {project!r} has no finished run in {storage.url}")
        run_id = max(done, key=lambda r: _run_json(storage, project, r).get("ended_at") or 0)
    folder = run_id if run_id in runs else safe_run_id(run_id)   # a folder name, or the Airflow run id
    if folder not in runs:
        raise missing_run(storage, project, run_id)
    summary.show(_run_json(storage, project, folder), lambda line: typer.echo(shown(line)))
    if not fetch:
        return
    typer.echo(shown("\n".join(summary_lines(run_sync_down(storage, project, folder, to))), lines=True))
    here = to.expanduser().resolve() / "output" / folder
    typer.echo(shown(f"results: {here}"))
    if open_report:
        import webbrowser

        webbrowser.open((here / "report.html").as_uri())


@app.command()
def logs(project: str, run_id: str, lines: int = typer.Option(30, help="last lines of each failed task's log"),
         storage_root: Optional[str] = ROOT, conn_id: Optional[str] = CONN, profile: Optional[str] = PROFILE,
         api_url: Optional[str] = API_URL, user: Optional[str] = USER, insecure_http: bool = INSECURE):
    """What failed in a run: why it was refused or failed, failures.csv, then the end of each failed task's logs.
    RUN_ID as `sciops status` prints it, or the run's folder name. A run refused before it had a folder: its
    reason from Airflow's ledger (Airflow's settings and password, as `sciops status`)."""
    import csv
    import io

    from sciops.cli.runs import ledger_row, missing_run, project_storage, run_folder
    from sciops.reporting.cells import plain

    storage = project_storage(_storage(settings(api_url, user, storage_root, conn_id, insecure_http, profile)),
                              project)
    folder = run_folder(storage, project, run_id)
    doc = _run_json(storage, project, folder) if folder and storage.exists(project, "output", folder, "run.json") \
        else {}
    if not doc:   # no run.json: refused before record wrote one (the ledger has its row), or still going
        try:
            doc = ledger_row(Airflow(settings(api_url, user, insecure_http=insecure_http)), project, run_id) or {}
        except Stop:   # no Airflow to ask (no password here, unreachable): the storage root is all there is
            doc = {}
        if folder is None and not doc:
            raise missing_run(storage, project, run_id)
    if doc.get("status") not in (None, "success"):
        typer.echo(shown(f"run {doc.get('airflow_run_id') or doc.get('run_id') or folder} {doc['status']}: "
                         f"{doc.get('reason') or '(no reason recorded)'}", lines=True))
    if folder is None or not storage.exists(project, "output", folder, "failures.csv"):
        if not doc:
            typer.echo(shown(f"run {run_id} of {project} has no failures.csv yet: still going (sciops status)"))
        return
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(project, "output", folder, "failures.csv").decode())))
    if not rows:
        typer.echo("no image failed")
        return
    for row in ({k: plain(v) for k, v in r.items()} for r in rows):   # as written, then made safe to show
        typer.echo(shown(f"{row['image']}: {row['status']} (task {row['task']}, attempt {row['attempt']}): "
                         f"{row['error']}"))
    tasks = sorted({(int(r["task"]), int(float(r["attempt"] or 1))) for r in rows if r.get("task")})
    for task, attempt in tasks:
        name = contract.task_log_name(task, attempt)
        if storage.exists(project, "output", folder, "logs", name):
            text = storage.read_bytes(project, "output", folder, "logs", name).decode("utf-8", "replace")
            tail = "\n".join(text.split("\n")[-lines:])   # a macro's output: shown, never obeyed by the terminal
            typer.echo(f"\n== {name} (last {lines} lines) ==\n" + shown(tail, lines=True))


def _storage(s):
    """The storage root of these settings (else Airflow's own), reachable: sciops.cli.storage."""
    from sciops.cli.storage import open_storage

    return open_storage(s)


def _run_json(storage, project: str, run: str) -> dict[str, Any]:
    import json

    try:
        return json.loads(storage.read_bytes(project, "output", run, "run.json"))
    except ValueError:
        return {}


def main(argv: list[str] | None = None) -> int:
    """The console script and ``python -m sciops``: runs the command in ``argv`` (default: the process's
    arguments) and returns the exit status; errors are one line (usage errors: click's own, 2)."""
    from sciops.errors import ConfigError, StorageError

    try:
        app(args=argv)   # standalone: click reports its usage errors itself, and always exits
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else EXIT_FAILED
    # one line each, with whatever names or logs it quotes made safe for the terminal (sciops.cli.terminal)
    except Stop as exc:
        typer.echo(f"error: {shown(exc)}", err=True)
        return exc.code
    except ConfigError as exc:
        typer.echo(f"error: {shown(str(exc).replace(chr(10), ' '))}", err=True)
        return EXIT_BAD_INPUT
    except StorageError as exc:
        typer.echo(f"error: {shown(exc)}", err=True)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - anything unforeseen is still one line, not a traceback
        typer.echo(f"error: {type(exc).__name__}: {shown(exc)}", err=True)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
