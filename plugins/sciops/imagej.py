"""Which ImageJ runs the macros on this machine, and the smoke run that catches a broken macro.

Two launchers (see ``include/job/sciops_task.py``):

* ``fiji``: ``ImageJ-linux64 --headless --console`` (a production AMI); found through
  ``SCIOPS_FIJI`` or ``ImageJ-linux64`` on PATH;
* ``imagej1``: ``java -jar ij.jar -batch`` under a private Xvfb (Debian's ``imagej``
  package; what the tests use); ``SCIOPS_IJ_JAR`` overrides the jar.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sciops.errors import ConfigError

log = logging.getLogger(__name__)

SMOKE_IMAGES = 3
SMOKE_STALL_S = 10
SMOKE_TIMEOUT_S = 120


def choose_launcher(kind: str, fiji: str | None, java: str | None, xvfb: str | None,
                    ij_jar: str | None) -> dict[str, Any] | None:
    """The launcher for ``kind`` from what a machine has (paths, or None when missing).

    ``auto`` prefers Fiji. Used for this machine (:func:`detect_launcher`) and for a
    cluster's head node (from the existing backend's probe).
    """
    if kind in ("auto", "fiji") and fiji:
        return {"kind": "fiji", "fiji": fiji}
    if kind in ("auto", "imagej1") and java and xvfb and ij_jar:
        return {"kind": "imagej1", "java": java, "ij_jar": ij_jar, "xvfb": xvfb}
    return None


def detect_launcher(kind: str = "auto") -> dict[str, Any] | None:
    """The launcher settings for the task manifest, or None when no ImageJ is installed here."""
    jar = os.environ.get("SCIOPS_IJ_JAR", "/usr/share/java/ij.jar")
    return choose_launcher(kind, os.environ.get("SCIOPS_FIJI") or shutil.which("ImageJ-linux64"),
                           shutil.which("java"), shutil.which("Xvfb"), jar if Path(jar).is_file() else None)


def require_launcher(kind: str) -> dict[str, Any]:
    launcher = detect_launcher(kind)
    if launcher is None:
        raise ConfigError([("launcher", f"no ImageJ found for launcher {kind!r} on this machine: install Debian's "
                                        "'imagej', 'xvfb' and a JRE (scripts/setup.sh does), or set SCIOPS_FIJI "
                                        "to a Fiji ImageJ-linux64")])
    return launcher


def smoke_candidates(input_dir: Path, images: list[str], n: int = SMOKE_IMAGES) -> list[str]:
    """The first few non-empty images: an empty file is the image's fault, not the macro's."""
    out = []
    for rel in images:
        if (input_dir / rel).stat().st_size > 0:
            out.append(rel)
        if len(out) == n:
            break
    return out


def smoke_run(manifest: dict[str, Any], images: list[str]) -> dict[str, Any]:
    """Run the macro on a few images with short stall/timeout limits, in a scratch folder.

    Passes as soon as one image succeeds (a corrupt image must not fail the run);
    raises :class:`ConfigError` on ``macro`` when none does, with the first error.
    Returns the runner's summary (with the ImageJ version).
    """
    with tempfile.TemporaryDirectory(prefix="sciops-smoke-") as tmp:
        m = dict(manifest, work_dir=tmp, run_dir=tmp, stall_seconds=min(manifest["stall_seconds"], SMOKE_STALL_S),
                 image_timeout_s=min(manifest["image_timeout_s"], SMOKE_TIMEOUT_S))
        mpath = Path(tmp, "manifest.json")
        mpath.write_text(json.dumps(m), encoding="utf-8")
        status = Path(tmp, "smoke.jsonl")
        runner = Path(manifest["driver_path"]).with_name("sciops_task.py")
        argv = [sys.executable, str(runner), "--manifest", str(mpath), "--status-file", str(status),
                *(f"--images={img}" for img in images)]  # "=": an image named "-x.tif" is not an option
        log.info("smoke run of %s on %s", manifest["macro_path"], ", ".join(images))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=len(images) * (SMOKE_TIMEOUT_S + 60))
        records = [json.loads(x) for x in status.read_text().splitlines()] if status.exists() else []
        summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        if any(r["status"] == "ok" for r in records):
            return summary
        smoke_log = Path(tmp, "logs", "smoke.log")
        tail = smoke_log.read_text(errors="replace")[-1500:] if smoke_log.exists() else proc.stderr[-1500:]
        first = records[0] if records else {"image": images[0] if images else "?", "error": "ImageJ did not start"}
        raise ConfigError([("macro", f"smoke run failed on {first['image']}: {first['error']}. Fix the macro "
                                     f"(run it on that image in ImageJ to see the error). Log tail:\n{tail}")])
