"""Collation: the runners' chunk tables → ``results.csv`` + ``results.parquet``, ``summary.csv``, ``failures.csv``.

Every image of the manifest ends in exactly one of ``summary.csv`` (processed) or
``failures.csv`` (with the reason): nothing is lost silently.

Each task runner appends an ``ok`` image's rows to its attempt's chunk tables
(``work/tables/task-NNNN.attempt-K.{results,summary}[.partP].csv``, see ``sciops_task``) and
records in the image's status line which file and which byte range. Collation reads those
few thousand files on a thread pool, takes only the byte ranges of each image's final ``ok``
status (a resubmitted chunk's earlier rows are never counted twice), joins the ranges of
files with the same header and parses them at once with pyarrow's multi-threaded CSV
reader, and writes the tables without going through a DataFrame per image. Measured by
``bench/bench_scale.py`` against the per-image read that was here before
(:func:`reference_tables`, kept as the yardstick of the tests and the bench).

The rule when chunk files disagree: columns are the union, in order of first appearance
(files in task and attempt order), a column an image lacks is empty; a column that is whole
numbers in one file and decimals in another is decimal; any other disagreement (numbers in
one file, text in another; dates; booleans mixed with numbers) makes the column text. A
macro column named ``image``, ``task`` or ``attempt`` is kept as ``macro_<name>``.

A chunk file shorter than the byte offset a status line recorded (a node lost before its
write reached shared storage) is detected: its complete rows are kept, and each image whose
rows were cut goes to failures.csv with the reason (the next attempt of a task re-runs such
images itself, see ``sciops_task.ChunkRunner.run``).

Collation re-checks what the runner judged (issue 35): an ``ok`` image's rows are taken only when
its byte range is whole (it ends at a line break, every quoted field in it is closed), parses with
exactly the header's fields under a header that begins with the key columns, and holds as many rows
as its status line says (``rows`` results, one summary row); otherwise the image goes to failures.csv with the reason and none of its rows is kept,
never a padded one. An ``ok`` line of a runner older than chunk tables has its image's own CSV files
read with the runner's strict reader (``sciops_node.units.read_csv_rows``) first.
"""
from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sciops_node import contract
from sciops_node.contract import Manifest
from sciops_node.qc import QC_FILE

from sciops.errors import SciOpsError
from sciops.reporting.cells import neutral_arrow, neutral_frame
from sciops.reporting.chunk_tables import read_chunk_tables, strict_problem, unify

log = logging.getLogger(__name__)

FAILURE_COLUMNS = ["image", "task", "attempt", "status", "error"]


@dataclass
class Collated:
    images: int
    ok: int
    failed: int
    result_rows: int
    files: dict[str, str]
    qc: dict[str, Any] | None = None   #: QC overlays drawn: how many, their seconds, their share of the macro's

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_table(path: Path) -> pd.DataFrame:
    """An ImageJ CSV (its unnamed row-number column dropped); empty when the file has no rows."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, FileNotFoundError):
        return pd.DataFrame()
    drop = [c for c in df.columns if not str(c).strip() or str(c).startswith("Unnamed:")]
    return df.drop(columns=drop)


#: What batch systems write into a killed task's stderr, worth repeating in failures.csv.
SCHEDULER_MESSAGES = re.compile(r"(exceeded memory limit|DUE TO TIME LIMIT|CANCELLED AT \S+ DUE TO \S+|"
                                r"oom-kill|Out Of Memory)", re.IGNORECASE)


def scheduler_says(log_dir: Path, job_id: str, task: int, task_ids: list[int]) -> str:
    """The batch system's own words about a task, from its stderr file (Slurm ``%x.%A.%a.err``,
    SGE ``<name>.e<job>.<index>``, localq ``<name>.<job>.<task>.err``)."""
    index = task_ids.index(task) + 1 if task in task_ids else task
    candidates = [*log_dir.glob(f"*.{job_id}.{task}.err"), *log_dir.glob(f"*.e{job_id}.{index}")]
    for path in candidates:
        try:
            m = SCHEDULER_MESSAGES.search(path.read_text(errors="replace")[-20000:])
        except OSError:
            continue
        if m:
            return m.group(1)
    return ""


def task_outcomes(work: Path) -> dict[int, str]:
    """Why a task never finished: the scheduler's accounting (``work/attempts.json``) plus
    the runner's own words from its last attempt summary, when it wrote one."""
    path = work / "attempts.json"
    if not path.exists():
        return {}
    reasons: dict[int, str] = {}
    for attempt in json.loads(path.read_text()):
        for t, acct in attempt.get("accounting", {}).items():
            if acct["state"] != "done":
                said = acct.get("reason") or ""
                state = "" if said.startswith(acct["state"]) else acct["state"] + " "
                reason = f"task {t} attempt {attempt['attempt']}: {state}{said}".strip()
                summary = Path(contract.attempt_summary_path(str(work), int(t), attempt["attempt"]))
                if summary.exists():
                    said = json.loads(summary.read_text()).get("error")
                    if said:
                        reason += f"; runner: {said}"
                said = scheduler_says(work.parent / "logs", attempt["job_id"], int(t), attempt["tasks"])
                if said:
                    reason += f"; scheduler: {said}"
                reasons[int(t)] = reason
    return reasons


def reference_tables(run_dir: Path, manifest: Manifest | dict[str, Any], images: list[str] | None = None,
                     statuses: dict[str, dict] | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The straightforward per-image read (each image's ``results.csv`` and ``summary.csv``).

    What collation did before chunk tables; kept as the yardstick of the tests and of
    ``bench/bench_scale.py``, and for ``ok`` status lines without ``tables`` (a runner
    older than chunk tables). Returns the results rows and the summary rows of ``images``
    (default: every image whose final status is ``ok``), in manifest order; ``statuses``: the final
    status lines when the caller has read them (collate), else they are read here.
    """
    manifest = Manifest.of(manifest)
    work = Path(run_dir) / "work"
    if statuses is None:
        statuses = {}
        for i in range(1, len(manifest.chunks) + 1):
            statuses.update(contract.read_statuses(contract.status_path(str(work), i)))
    if images is None:
        images = [i for c in manifest.chunks for i in c if statuses.get(i, {}).get("status") == "ok"]
    summary_rows, tables = [], []
    for image in images:
        rec = statuses[image]
        outdir = Path(contract.image_output_dir(str(work), image))
        table = read_table(outdir / "results.csv")
        row = {"image": image, "task": rec["task"], "attempt": rec["attempt"], "seconds": rec["seconds"],
               "n_results": len(table)}
        macro_summary = read_table(outdir / "summary.csv")
        if len(macro_summary):
            row.update({k: v for k, v in macro_summary.iloc[0].to_dict().items() if k not in row})
        summary_rows.append(row)
        if len(table):
            table = table.rename(columns={k: f"macro_{k}" for k in contract.RESULT_KEYS})
            table.insert(0, "attempt", rec["attempt"])
            table.insert(0, "task", rec["task"])
            table.insert(0, "image", image)
            tables.append(table)
    results = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["image", "task", "attempt"])
    return results, summary_rows


def overlay_path(image: str) -> str:
    """An image's QC overlay (``qc.png``, sciops_node.qc), relative to the run folder: summary.csv's ``qc_overlay``."""
    return "/".join(("work", "images", image, QC_FILE))


UNIT_COLUMNS = ("file", "series", "series_name", "channel")


def with_unit_columns(table: pa.Table, names: dict[str, str], channel: str) -> pa.Table:
    """``table`` with ``file``, ``series``, ``series_name`` and ``channel`` after ``image`` (a run that read
    files through Bio-Formats): a plain image is its own file, with no series or channel."""
    image = table["image"].combine_chunks() if table.num_rows else pa.array([], pa.string())
    # a unit read through Bio-Formats: the runner's own pattern (sciops_task.UNIT_RE)
    parts = pc.extract_regex(image, pattern=contract.UNIT_RE.pattern)
    file = pc.coalesce(pc.struct_field(parts, "file"), image)
    series = pc.cast(pc.struct_field(parts, "series"), pa.int64())
    own = pc.struct_field(parts, "channel")
    fixed = pa.scalar(None if channel in ("all", "each") else channel, pa.string())
    chan = pc.cast(pc.if_else(pc.equal(own, ""), pc.if_else(pc.is_valid(series), fixed, pa.scalar(None, pa.string())),
                              own), pa.int64())
    unique = pc.unique(image)
    name = pc.take(pa.array([names.get(u) for u in unique.to_pylist()], pa.string()), pc.index_in(image, unique))
    at = table.column_names.index("image") + 1
    for i, (col, values) in enumerate(zip(UNIT_COLUMNS, (file, series, name, chan))):
        table = table.add_column(at + i, col, values)
    return table


def collate(run_dir: Path, manifest: Manifest | dict[str, Any]) -> Collated:
    run_dir = Path(run_dir)
    manifest = Manifest.of(manifest)
    work = run_dir / "work"   # as seen from here (the manifest holds the cluster's paths)
    statuses: dict[str, dict] = {}
    in_flight: set[str] = set()   # begun by an attempt that died under it (see sciops_task)
    for i in range(1, len(manifest.chunks) + 1):
        final, deaths = contract.scan_statuses(contract.status_path(str(work), i))
        statuses.update(final)
        in_flight.update(deaths)
    reasons = task_outcomes(work)
    ok = {image: rec for image, rec in statuses.items() if rec.get("status") == "ok"}
    chunk_tables, cut = read_chunk_tables(work, {i: r for i, r in ok.items() if "tables" in r})
    older = [i for c in manifest.chunks for i in c if i in ok and "tables" not in ok[i]]
    for image in older:   # a runner older than chunk tables: its image's own files, read strictly
        problem = strict_problem(Path(contract.image_output_dir(str(work), image)))
        if problem:
            cut[image] = problem
    older = [i for i in older if i not in cut]
    older_results, older_summary = reference_tables(run_dir, manifest, older, statuses) if older else (None, [])

    manifest_images = pa.array([i for c in manifest.chunks for i in c], pa.string())
    parts = chunk_tables["results"]
    if older_results is not None and len(older_results):
        parts.append(pa.Table.from_pandas(older_results, preserve_index=False))
    results = unify(parts)
    if cut:
        results = results.filter(pc.invert(pc.is_in(results["image"], value_set=pa.array(list(cut), pa.string()))))
    if results.num_rows:   # manifest order; an image's rows stay in the order the macro wrote them
        position = pc.index_in(results["image"], value_set=manifest_images)
        if not pc.all(pc.greater_equal(position[1:], position[:-1])).as_py():   # resubmissions reorder
            results = results.take(pc.sort_indices(position))

    summary_rows, failures, qc_seconds = [], [], 0.0
    keys = contract.SUMMARY_KEYS
    older_by_image = {r["image"]: {k: r[k] for k in keys} for r in older_summary}
    macro_parts = chunk_tables["summary"]
    older_macro = [{k: v for k, v in r.items() if k == "image" or k not in keys} for r in older_summary]
    if any(len(r) > 1 for r in older_macro):
        macro_parts.append(pa.Table.from_pandas(pd.DataFrame(older_macro), preserve_index=False))
    for task, chunk in enumerate(manifest.chunks, start=1):
        for image in chunk:
            rec = statuses.get(image)
            if rec is None:
                why = reasons.get(task, f"task {task} never reported this image")
                # only the image that was running is blamed; the chunk's others were never reached
                error = (f"in flight when the task died: {why}" if image in in_flight else
                         f"never started: {why}")
                failures.append({"image": image, "task": task, "attempt": None, "status": "not_run",
                                 "error": error})
            elif rec["status"] != "ok":
                failures.append({k: rec.get(k) for k in FAILURE_COLUMNS})
            elif image in cut:
                failures.append({"image": image, "task": rec["task"], "attempt": rec["attempt"],
                                 "status": "failed", "error": cut[image]})
            elif image in older_by_image:
                summary_rows.append(older_by_image[image])
            else:
                summary_rows.append({"image": image, "task": rec["task"], "attempt": rec["attempt"],
                                     "seconds": rec["seconds"], "n_results": rec.get("rows", 0),
                                     "qc_overlay": overlay_path(image) if rec.get("qc") else "",
                                     "qc_drawn": rec.get("qc") or ""})
                qc_seconds += rec.get("qc_seconds") or 0.0
    summary = pd.DataFrame(summary_rows, columns=[*keys, "qc_overlay", "qc_drawn"])
    summary[["qc_overlay", "qc_drawn"]] = summary[["qc_overlay", "qc_drawn"]].fillna("")
    macro = unify(macro_parts)
    if macro.num_rows and len(summary):
        macro = macro.drop_columns([c for c in ("attempt", "task") if c in macro.column_names]).to_pandas()
        summary = summary.merge(macro, on="image", how="left")
    failed = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
    units = work / "units.json"
    if units.is_file():   # files read through Bio-Formats: say which file, series and channel each row is
        names, channel = json.loads(units.read_text(encoding="utf-8")), manifest.channel
        results = with_unit_columns(results, names, channel)
        summary, failed = (with_unit_columns(pa.Table.from_pandas(df, preserve_index=False), names, channel)
                           .to_pandas(integer_object_nulls=True) for df in (summary, failed))
    files = {
        "results_csv": run_dir / "results.csv",
        "results_parquet": run_dir / "results.parquet",
        "summary_csv": run_dir / "summary.csv",
        "failures_csv": run_dir / "failures.csv",
    }
    with ThreadPoolExecutor(2) as pool:   # both release the GIL
        # the CSV files with no cell a spreadsheet would run as a formula (sciops.reporting.cells); parquet as is
        wrote = [pool.submit(pacsv.write_csv, neutral_arrow(results), files["results_csv"],
                             pacsv.WriteOptions(quoting_style="needed")),
                 pool.submit(pq.write_table, results, files["results_parquet"])]
        for f in wrote:
            f.result()
    neutral_frame(summary).to_csv(files["summary_csv"], index=False)
    neutral_frame(failed).to_csv(files["failures_csv"], index=False)
    n_images = len(manifest_images)
    if len(summary) + len(failed) != n_images:
        raise SciOpsError(f"collation accounted for {len(summary) + len(failed)} of {n_images} images")
    log.info("collated %d images: %d ok, %d failed, %d result rows", n_images, len(summary), len(failed),
             results.num_rows)
    overlays = int((summary["qc_overlay"] != "").sum()) if len(summary) else 0
    macro_seconds = float(pd.to_numeric(summary["seconds"], errors="coerce").sum()) if len(summary) else 0.0
    return Collated(n_images, len(summary), len(failed), results.num_rows, {k: str(v) for k, v in files.items()},
                    {"overlays": overlays, "seconds": round(qc_seconds, 3),
                     "share_of_macro_time": round(qc_seconds / macro_seconds, 4) if macro_seconds else None})
