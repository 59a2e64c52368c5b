"""The runners' chunk tables read back for collation: columnar, multi-threaded, each image's rows re-checked.

Each task runner appends an image's rows to ``work/tables/task-NNNN.attempt-K.<kind>[.partP].csv`` and
records the byte range in the image's ``ok`` status line. Here those ranges are read with pyarrow's CSV
reader on a thread pool (cost O(chunks), not O(images)), and each range is checked before its rows are
kept: a cut-off row, an odd quote or a row count that differs from the status line puts the image in
failures.csv with the reason (:func:`range_problem`), never a padded row.
"""
from __future__ import annotations

import csv
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sciops_node import contract, units

KEY_TYPES = {"image": pa.string(), "task": pa.int64(), "attempt": pa.int64()}
#: What the macros' CSV text is read as: no dates or times (kept as the text the macro wrote).
CONVERT = pacsv.ConvertOptions(column_types=KEY_TYPES, timestamp_parsers=[])
READ = pacsv.ReadOptions(use_threads=True, block_size=8 << 20)
#: Chunk files read and parsed together (a few tens of MB of CSV at 25 images of 40 rows per file).
FILES_PER_PARSE = 500
EMPTY_RESULTS = pa.schema([pa.field(k, t) for k, t in KEY_TYPES.items()])


def unify(tables: list[pa.Table]) -> pa.Table:
    """One table from chunk tables whose columns or types may differ (the module's rule)."""
    seen: dict[str, set] = {}
    for t in tables:
        for f in t.schema:
            seen.setdefault(f.name, set()).add(f.type)
    target = {}
    for name, types in seen.items():
        types = {t for t in types if not pa.types.is_null(t)}
        if not types:
            target[name] = pa.null()
        elif len(types) == 1 and not pa.types.is_temporal(next(iter(types))):
            target[name] = next(iter(types))
        elif all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
            target[name] = pa.float64()
        else:
            target[name] = pa.string()
    same = [t for t in tables if t.schema.names == list(target) and t.schema.types == list(target.values())]
    if len(same) < len(tables):
        tables = [t if t in same else pa.Table.from_arrays(
            [t[n].cast(typ) if n in t.column_names else pa.nulls(len(t), typ) for n, typ in target.items()],
            names=list(target)) for t in tables]
    return pa.concat_tables(tables) if tables else EMPTY_RESULTS.empty_table()


def _read_chunk_file(path: Path, end: int) -> tuple[bytes, int]:
    """The first ``end`` bytes of a chunk file, and how many it has (-1: no file)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(end)
    except FileNotFoundError:
        return b"", -1
    return data, len(data)


def range_problem(data: bytes, start: int, end: int) -> str | None:
    """Why the bytes ``start:end`` of a chunk file (one image's rows) are not whole rows, or None (the runner's
    csv.writer ends every row with a line break and doubles every quote inside a quoted field: an odd count
    of quotes is a field left open)."""
    if end > start and data[end - 1] != 0x0A:
        return "do not end at a line break"
    if data.count(b'"', start, end) % 2:
        return "hold a quoted field that is never closed"
    return None


def _parse(kind: str, header: bytes, items: list[tuple[str, str, bytes]]) -> tuple[list[pa.Table], dict[str, str]]:
    """The rows of ``items`` (image, file, bytes) under ``header``, parsed at once; when that fails, each
    image's alone finds which are malformed (refused with the reason) and the rest are parsed at once."""
    def read(data: bytes) -> pa.Table:
        return pacsv.read_csv(pa.py_buffer(data), read_options=READ, convert_options=CONVERT)

    first = next(csv.reader([header.decode("utf-8", "replace").rstrip("\r\n")]), [""])[0]
    if first != "image":   # the runner's chunk tables begin with their key columns (contract.RESULT_KEYS)
        return [], {image: f"its {kind} rows are in tables/{name}, whose header lacks the image column it begins "
                           f"with: {header[:80]!r}" for image, name, _ in items}
    try:
        return [read(header + b"".join(body for _, _, body in items))], {}
    except pa.ArrowInvalid:
        pass
    good, bad = [], {}
    for image, name, body in items:
        try:
            read(header + body)
            good.append(body)
        except pa.ArrowInvalid as exc:
            bad[image] = f"its {kind} rows in tables/{name} are malformed: {' '.join(str(exc).split())[:300]}"
    return ([read(header + b"".join(good))] if good else []), bad


def _row_counts(tables: list[pa.Table]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in tables:
        for row in pc.value_counts(t["image"]).to_pylist():
            counts[row["values"]] = counts.get(row["values"], 0) + row["counts"]
    return counts


def read_chunk_tables(work: Path, ok: dict[str, dict]) -> tuple[dict[str, list[pa.Table]], dict[str, str]]:
    """Per kind (``results``, ``summary``) the rows of the ``ok`` images' final attempts, and the
    images whose rows are missing or not whole, with the reason (none of their rows is in the tables).

    Each status line names the byte range its image's rows fill in a chunk file, so only those
    ranges are read: rows of an attempt that died before its status line are never taken. The
    ranges of every file with the same header are joined and parsed at once (pyarrow's CSV
    reader, multi-threaded): one parse per distinct header, not one per file. Each range is
    re-checked (:func:`range_problem`, the header's field count, the row count its status line
    recorded): the runner's verdict is not taken on trust.
    """
    wanted: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for image, rec in ok.items():
        for kind, (name, start, end) in (rec.get("tables") or {}).items():
            wanted.setdefault((kind, name), []).append((start, end, image))
    keys = sorted(wanted)   # task, then attempt, then part: the order the rows were written in
    tables: dict[str, list[pa.Table]] = {"results": [], "summary": []}
    cut: dict[str, str] = {}
    files: dict[tuple[str, str], str] = {}   # (kind, image) -> its chunk file, for the reasons
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        for i in range(0, len(keys), FILES_PER_PARSE):   # a batch's bytes at a time: memory stays bounded
            batch = keys[i:i + FILES_PER_PARSE]
            loaded = pool.map(lambda k: _read_chunk_file(Path(contract.tables_dir(str(work)), k[1]), max(e for _, e, _ in wanted[k])),
                              batch)
            groups: dict[tuple[str, bytes], list[tuple[str, str, bytes]]] = {}
            for (kind, name), (data, have) in zip(batch, loaded):
                items = groups.setdefault((kind, data[:data.find(b"\n") + 1]), [])
                for start, end, image in sorted(wanted[(kind, name)]):
                    files[(kind, image)] = name
                    if end > have:
                        cut[image] = (f"its {kind} rows were cut short: tables/{name} has "
                                      f"{'no file' if have < 0 else f'{have} bytes'}, the runner wrote up to byte "
                                      f"{end} (a node lost before the write reached shared storage?)")
                    elif problem := range_problem(data, start, end):
                        cut[image] = f"its {kind} rows in tables/{name} (bytes {start}-{end}) {problem}: not whole"
                    else:
                        items.append((image, name, data[start:end]))
            for (kind, header), items in groups.items():
                if header and items:
                    parsed, bad = _parse(kind, header, items)
                    tables[kind].extend(parsed)
                    cut.update(bad)
    stray = False
    for kind in ("results", "summary"):   # as many rows as the status line says, each image
        got = _row_counts(tables[kind])
        stray = stray or any(image not in ok for image in got)   # a row of no image's (its name garbled)
        for image, rec in ok.items():
            if kind not in (rec.get("tables") or {}) or image in cut:
                continue
            want = rec.get("rows") if kind == "results" else 1
            if want is not None and got.get(image, 0) != want:
                cut[image] = (f"its {kind} rows do not match its status line: {got.get(image, 0)} in "
                              f"tables/{files[(kind, image)]}, the runner recorded {want}")
    if cut or stray:   # only the rows of the images taken: none of a refused image's
        keep = pa.array([image for image in ok if image not in cut], pa.string())
        tables = {kind: [t.filter(pc.is_in(t["image"], value_set=keep)) for t in parts]
                  for kind, parts in tables.items()}
    return tables, cut


def strict_problem(outdir: Path) -> str | None:
    """Why an image's own results.csv or summary.csv is not a whole table (the runner's strict reader), or None."""
    for name in ("results.csv", "summary.csv"):
        try:
            units.read_csv_rows(str(outdir / name))
        except units.TableError as exc:
            return str(exc)
    return None
