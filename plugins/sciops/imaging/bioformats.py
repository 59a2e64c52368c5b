"""Microscope files through Bio-Formats: which files need it, what series they hold, the units of work.

ImageJ 1 opens plain TIFF, PNG, JPEG, GIF and BMP itself; everything else a facility's instruments
write (Zeiss ``.czi``, Nikon ``.nd2``, Leica ``.lif``, Olympus ``.oir``/``.vsi``, ...) and OME-TIFF,
which holds series and channels ImageJ's own TIFF reader flattens, is read through Bio-Formats
(``scripts/bioformats.sh`` puts its jar in ImageJ 1's plugins folder; Fiji has its own).

``validate`` reads each such file once through :func:`probe`: the task runner drives one JVM over
the files with ``include/job/probe.ijm`` (``SciopsSeries.java`` beside the runner's package: the series,
their names and dimensions from the file's metadata, in one pass, no pixels; a file Bio-Formats cannot
read fails on its own, in Bio-Formats' words). A file cut short is found without its planes: a TIFF by
its IFDs (every page's data within the file: ``sciops.imaging.imagej.image_problem``, before the probe),
any other format by one corner of the last plane of its last series, where such a file ends. What
Bio-Formats parsed is kept as a memo in the run's ``work/bfmemo`` (the manifest's ``bioformats_memo``),
which the tasks open instead of parsing the file again; a task keeps the file open across its series.
The answer is kept in the run's ``work/series.json``; ``plan`` turns it into units of work with
:func:`expand`:

* ``file#S``: series ``S`` (0-based, as Bio-Formats counts) of a file read through Bio-Formats, with
  the channel the ``channel`` parameter picks (all as a stack, or one);
* ``file#ScC``: channel ``C`` (1-based, as ImageJ counts) of series ``S``, with ``channel: each``.

The driver opens a unit with the Bio-Formats Importer and hands the macro a plain TIFF of it, so a
macro's ``open(input)`` works on any format (``include/job/driver.ijm``). A pyramid's lower
resolutions, which Bio-Formats lists as series of their own, are not units: only the full
resolution is, and a series (or channel) whose pixels would not fit the task's JVM heap three times
(the image, the macro's working copy, a mask) is refused in ``validate`` with the memory it needs.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sciops.errors import ConfigError
from sciops.imaging.heap import memory_for
from sciops.run.bounded import brief, control_chars
from sciops.run.project import JOB_DIR
from sciops_node import contract
from sciops_node.contract import Manifest

log = logging.getLogger(__name__)

#: What ImageJ 1 opens itself (a plain TIFF is one image, as before).
IMAGEJ_NATIVE = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".gif", ".bmp")
#: TIFFs whose series and channels only Bio-Formats reads.
BIOFORMATS_TIFF = (".ome.tif", ".ome.tiff", ".ome.btf", ".ome.tf2", ".ome.tf8")
BYTES_PER_PIXEL = {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "float": 4,
                   "double": 8, "bit": 1}
#: A file's units: one line of series.tsv = index, name, sizeX, sizeY, sizeC, sizeZ, sizeT, pixel type.
SERIES_FIELDS = ("index", "name", "x", "y", "c", "z", "t", "type")
PROBE_STALL_S = 15
PROBE_TIMEOUT_S = 120


def needs_bioformats(rel: str) -> bool:
    """Whether ``rel`` (a path under input/) is read through Bio-Formats."""
    name = rel.lower()
    return name.endswith(BIOFORMATS_TIFF) or not name.endswith(IMAGEJ_NATIVE)


def unit_parts(unit: str) -> tuple[str, int | None, int | None]:
    """``(file, series, channel)`` of a unit (the task runner's parser: one definition)."""
    return contract.unit_parts(unit)


def probe(files: list[str], input_dir: Path, launcher: dict[str, Any], memory_mb: int,
          memo_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """What Bio-Formats reads in each file: ``{file: {"series": [...], "read": how}}`` or ``{file: {"error": why}}``.

    One JVM for all the files (restarted after a file that breaks it), through the task runner with
    ``probe.ijm`` as the macro, with this launcher and memory grant. Each file's metadata is read once and
    no pixels (a non-TIFF file: one corner of its last plane); ``how`` says so: ``{"from": "parsed" or
    "memo", "planes": planes read, "seconds": ...}``. ``memo_dir``: where the memo of what was parsed goes
    (the run's ``work/bfmemo``), for the tasks that open the files.
    """
    if not files:
        return {}
    with tempfile.TemporaryDirectory(prefix="sciops-probe-") as tmp:
        m = Manifest(work_dir=tmp, run_dir=tmp, input_dir=str(input_dir), macro_path=str(JOB_DIR / "probe.ijm"),
                     driver_path=str(JOB_DIR / "driver.ijm"), launcher=launcher, memory_mb=memory_mb,
                     expected_outputs=["series.tsv"], stall_seconds=PROBE_STALL_S, image_timeout_s=PROBE_TIMEOUT_S,
                     chunks=[files], bioformats_memo=str(memo_dir or contract.memo_dir(tmp)))
        mpath = m.dump(contract.manifest_path(tmp))
        status = Path(tmp, "probe.jsonl")
        argv = [sys.executable, str(JOB_DIR / "sciops_task.py"), "--manifest", str(mpath),
                "--status-file", str(status), *(f"--images={f}" for f in files)]
        log.info("reading the series of %d file(s) through Bio-Formats", len(files))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=len(files) * (PROBE_TIMEOUT_S + 30) + 120)
        final = contract.read_statuses(str(status)) if status.exists() else {}
        if not final:   # the runner or ImageJ itself failed: not the files' fault
            raise ConfigError([("launcher", f"ImageJ with Bio-Formats did not start on this worker to read the files' "
                                            f"series (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-800:]}")])
        out: dict[str, dict[str, Any]] = {}
        for rel in files:
            rec = final.get(rel)
            table = Path(contract.image_output_dir(tmp, rel), "series.tsv")
            if rec and rec.get("status") == "ok" and table.is_file():
                out[rel] = {"series": _parse(table.read_text(encoding="utf-8", errors="replace")),
                            "read": _read(table.with_name("read.tsv"))}
                log.info("Bio-Formats read %s once: %d series from its metadata (%s), %d plane(s) read, %.2f s",
                         rel, len(out[rel]["series"]), out[rel]["read"].get("from"), out[rel]["read"].get("planes", -1),
                         out[rel]["read"].get("seconds", 0))
            else:
                why = (rec or {}).get("error") or f"the probe did not finish it ({proc.stderr.strip()[-300:]})"
                out[rel] = {"error": f"Bio-Formats cannot read it: {why}"}
        return out


def _read(path: Path) -> dict[str, Any]:
    """How the probe read a file (its ``read.tsv``: from, series, planes, milliseconds)."""
    try:
        cells = path.read_text(encoding="utf-8").strip().split("\t")
        return {"from": cells[0], "planes": int(cells[2]), "seconds": int(cells[3]) / 1000}
    except (OSError, IndexError, ValueError):
        return {}


def _parse(text: str) -> list[dict[str, Any]]:
    rows = []
    # "\n" only: str.splitlines also breaks at U+2028 and other separators a series name may hold, which
    # cut the row short and dropped the series silently (such a name is refused in expand, naming it)
    for line in text.split("\n"):
        cells = line.rstrip("\r").split("\t")
        if len(cells) != len(SERIES_FIELDS):
            continue
        row = dict(zip(SERIES_FIELDS, cells))
        for k in ("index", "x", "y", "c", "z", "t"):
            row[k] = int(float(row[k]))
        rows.append(row)
    return rows


def full_resolutions(series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The series less a pyramid's lower resolutions (Bio-Formats lists each level as a series).

    A series is a lower level of the last full one before it when it has the same channels, planes
    and pixel type, the same aspect ratio, and is at least half as small in both dimensions; the
    positions or wells of a plate all have one size, so none of them is ever taken for a level.
    """
    out: list[dict[str, Any]] = []
    for s in series:
        top = out[-1] if out else None
        if top and all(s[k] == top[k] for k in ("c", "z", "t", "type")) and s["x"] * 2 <= top["x"] + 1 \
                and s["y"] * 2 <= top["y"] + 1 and abs(top["x"] / max(s["x"], 1) - top["y"] / max(s["y"], 1)) \
                <= 0.05 * top["x"] / max(s["x"], 1):
            top.setdefault("levels", 1)
            top["levels"] += 1
            continue
        out.append(dict(s))
    return out


def series_bytes(s: dict[str, Any], channels: int) -> int:
    return s["x"] * s["y"] * s["z"] * s["t"] * channels * BYTES_PER_PIXEL.get(s["type"], 8)


#: How long one series name may take to match ``series`` (the regex module's timeout): a pattern that
#: backtracks catastrophically, such as ``(a+)+$``, is refused on ``series`` instead of hanging validate.
SERIES_MATCH_TIMEOUT_S = 0.2


def series_pattern(text: str):
    """``series`` as a compiled pattern of the ``regex`` module (the syntax of ``re``, with a match timeout)."""
    import regex

    return regex.compile(text)


def series_search(pattern, name: str) -> bool:
    """Whether ``pattern`` is found in the series name; ConfigError on ``series`` past the time bound."""
    try:
        return pattern.search(name, timeout=SERIES_MATCH_TIMEOUT_S) is not None
    except TimeoutError:
        raise ConfigError([("series", f"the pattern took more than {SERIES_MATCH_TIMEOUT_S} s on the series name "
                                      f"{brief(name)} (nested repetition such as '(a+)+' backtracks without end); "
                                      "write a simpler pattern, e.g. 'Well B' or '^pos[0-9]+$'")]) from None


def expand(files: list[str], probed: dict[str, dict[str, Any]], series_sel: str, channel: str,
           heap_mb: int) -> tuple[list[str], dict[str, str], list[tuple[str, str]], dict[str, Any]]:
    """The units of work of ``files`` (in order), and what cannot run.

    Returns ``(units, unreadable, too_large, names)``: ``unreadable`` maps a file to why Bio-Formats
    cannot read it; ``too_large`` lists ``(unit, why)`` for a series whose pixels the heap cannot
    hold; ``names`` maps each unit to its series name. A file not read through Bio-Formats is its
    own unit. A file none of whose series ``series_sel`` picks gives no unit.
    """
    units: list[str] = []
    unreadable: dict[str, str] = {}
    too_large: list[tuple[str, str]] = []
    names: dict[str, Any] = {}
    pick = None if series_sel in ("all", "first") else series_pattern(series_sel)
    for rel in files:
        info = probed.get(rel)
        if info is None:
            units.append(rel)
            continue
        if "error" in info:
            unreadable[rel] = info["error"]
            continue
        odd = [s for s in info["series"] if control_chars(s["name"])]
        if odd:   # a tab or line break in a unit's name would split the job file's lines and the tables' rows
            unreadable[rel] = (f"series {odd[0]['index']}'s name holds control characters "
                               f"({', '.join(control_chars(odd[0]['name']))}); rename it in the acquisition software")
            continue
        chosen = full_resolutions(info["series"])
        if series_sel == "first":
            chosen = chosen[:1]
        elif pick is not None:
            chosen = [s for s in chosen if series_search(pick, s["name"])]
        for s in chosen:
            per_unit = 1 if channel != "all" else s["c"]
            mb = series_bytes(s, per_unit) / 2**20
            ids = ([f"{rel}#{s['index']}c{c}" for c in range(1, s["c"] + 1)] if channel == "each"
                   else [f"{rel}#{s['index']}"])
            if channel not in ("all", "each") and int(channel) > s["c"]:
                too_large.append((ids[0], f"series {s['index']} ({s['name']}) has {s['c']} channel(s); channel "
                                          f"{channel} does not exist"))
                continue
            if 3 * mb > heap_mb:
                too_large.append((ids[0], f"series {s['index']} ({s['name']}) is {s['x']}×{s['y']} pixels × "
                                          f"{per_unit} channel(s) × {s['z']} z × {s['t']} t of {s['type']} = "
                                          f"{mb:,.0f} MB, more than a third of the {heap_mb} MB JVM heap; set memory "
                                          f"to at least {memory_for(mb)}"))
                continue
            units.extend(ids)
            names.update({u: s["name"] for u in ids})
    return units, unreadable, too_large, names


def check(files: list[str], probed: dict[str, dict[str, Any]], cfg, heap_mb: int) -> tuple[list[str], dict[str, str]]:
    """:func:`expand`, with the refusals ``validate`` makes: unreadable files (unless ``skip_unreadable``),
    series too large for ``memory``, a selection that picks nothing. Returns the units and, with
    ``skip_unreadable``, the files to list in failures.csv."""
    units, unreadable, too_large, _ = expand(files, probed, cfg.series, cfg.channel, heap_mb)
    problems = []
    if unreadable and not cfg.skip_unreadable:
        problems.append(("input", f"{len(unreadable)} file(s) in input/ cannot be read: " + "; ".join(
            f"{rel}: {why}" for rel, why in list(unreadable.items())[:5])
            + (f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else "")
            + ". Fix: replace or remove them (copy them again from the instrument), narrow file_pattern, or set "
              "skip_unreadable: true to run the others and list these in failures.csv."))
    if too_large:
        field = "channel" if all("does not exist" in why for _, why in too_large) else "memory"
        problems.append((field, "; ".join(f"{u}: {why}" for u, why in too_large[:5])
                         + (f" (and {len(too_large) - 5} more)" if len(too_large) > 5 else "")))
    if not problems and not units and not unreadable:
        problems.append(("series", f"series={cfg.series!r} picks no series in the {len(files)} file(s); "
                                   "use all, first, or a pattern found in the series names"))
    if problems:
        raise ConfigError(problems)
    return units + list(unreadable), unreadable


def save(work: Path, probed: dict[str, dict[str, Any]]) -> Path:
    path = Path(work, "series.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(probed), encoding="utf-8")
    return path


def load(work: Path) -> dict[str, dict[str, Any]]:
    path = Path(work, "series.json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
