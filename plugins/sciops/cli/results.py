"""``sciops results``' summary: what the macro measured in a run, as run.json's ``results`` section says it.

The key measure and each measure's median and IQR, the outliers (the first few, with why), the plate's
outlier wells and the segmentation warnings: the same as the top of report.html, in a terminal.
"""
from __future__ import annotations

from typing import Any, Callable


def lines(doc: dict[str, Any], outliers_shown: int = 10) -> list[str]:
    """The summary of a run.json (``doc``) as text lines (names as they are: the caller makes them safe to show)."""
    res = doc.get("results")
    images = doc.get("images") or {}
    out = [f"run {doc.get('airflow_run_id') or doc.get('run_id')}: {doc.get('status')}, images ok {images.get('ok')}, "
           f"failed {images.get('failed')} of {images.get('total')}"]
    if not res:
        return out + ["no results section (the run collated nothing, or ran before SciOps measured results)"]
    for w in res.get("warnings") or []:
        example = f" (e.g. {', '.join(w['images'][:3])})" if w.get("images") else ""
        out.append(f"WARNING {w['check']}: {w['says']}{example}")
    for name, st in (res.get("measures") or {}).items():
        if st.get("n"):
            key = " (key)" if name == res.get("key") else ""
            out.append(f"{name}{key}: median {st['median']}, IQR {st['q1']}-{st['q3']}, min {st['min']}, "
                       f"max {st['max']}, images {st['n']}" + (f", zeros {st['zeros']}" if st.get("zeros") else ""))
    total = res.get("outliers_total", 0)
    out.append(f"outliers: {total}" + (":" if total else ""))
    for o in (res.get("outliers") or [])[:outliers_shown]:
        out.append(f"  {o['image']}: " + (f"{o['measure']} {o['value']}, " if o.get("measure") else "") + o["why"])
    if total > outliers_shown:
        out.append(f"  ... and {total - outliers_shown} more (report.html, run.json)")
    plate = res.get("plate")
    if plate:
        out.append(f"plate: {plate['format']} wells, {plate['measure']} per well; outlier wells: "
                   f"{', '.join(plate['outlier_wells']) or 'none'}")
    qc = doc.get("qc_overlays") or {}
    if qc.get("overlays") is not None:
        share = qc.get("share_of_macro_time")
        out.append(f"QC overlays: {qc['overlays']}" + (f" ({share:.1%} of the macro's time)" if share is not None else ""))
    return out


def show(doc: dict[str, Any], echo: Callable[[str], Any]) -> None:
    for line in lines(doc):
        echo(line)
