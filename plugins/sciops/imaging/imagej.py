"""Which ImageJ runs the macros on this machine, and the smoke run that catches a broken macro.

Two launchers (see ``include/job/sciops_task.py``):

* ``fiji``: ``ImageJ-linux64 --headless --console`` (a production AMI); found through
  ``SCIOPS_FIJI`` or ``ImageJ-linux64`` on PATH;
* ``imagej1``: ``java -jar ij.jar -batch`` under a private Xvfb (Debian's ``imagej``
  package; what the tests use); ``SCIOPS_IJ_JAR`` overrides the jar.

The smoke run blames the right thing. Before it, the candidate images' headers are read
(tifffile for TIFF, Pillow for PNG/JPEG/GIF/BMP; never the pixels): an empty, truncated or
mislabelled file is skipped for the smoke run (it will be a row of failures.csv), and a
project whose checked images all are so is refused on ``input``; a plane larger than the
JVM heap is refused on ``memory``. After a failed smoke run, a JVM that never began an image
is ``launcher`` (or ``memory`` when the JVM could not reserve its heap), an out-of-memory line
is ``memory``, and only what remains is ``macro``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sciops import MACRO_DIR
from sciops.errors import ConfigError
from sciops.imaging.bioformats import needs_bioformats
from sciops.imaging.heap import memory_for
from sciops.settings import setting
from sciops_node import contract, jvm, sandbox
from sciops_node.contract import Manifest

log = logging.getLogger(__name__)

SMOKE_IMAGES = 3
SMOKE_STALL_S = 10
SMOKE_TIMEOUT_S = 120
#: Images whose headers are read at most, looking for smoke candidates.
SMOKE_SCAN = 50
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Magic numbers by the extensions that claim them: the formats ImageJ 1 opens itself, and the vendor
#: formats whose first bytes are fixed (the rest Bio-Formats judges: sciops.imaging.bioformats).
MAGIC = {
    (".tif", ".tiff", ".btf", ".tf2", ".tf8", ".lsm", ".vsi", ".svs", ".ndpi", ".scn", ".stk"): TIFF_MAGIC,
    (".png",): (b"\x89PNG\r\n\x1a\n",),
    (".jpg", ".jpeg"): (b"\xff\xd8\xff",),
    (".gif",): (b"GIF87a", b"GIF89a"),
    (".bmp",): (b"BM",),
    (".czi",): (b"ZISRAWFILE",),
    (".nd2",): (b"\xda\xce\xbe\x0a", b"\x00\x00\x00\x0cjP  "),
    (".lif",): (b"\x70\x00\x00\x00",),
    (".oir",): (b"OLYMPUSRAWFORMAT",),
    (".oib", ".zvi"): (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",),
}
#: The formats whose headers SciOps reads itself (tifffile, Pillow).
HEADER_READ = TIFF_MAGIC + (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
#: A JVM that could not reserve its heap says one of these (too much -Xmx for the node or ulimit).
HEAP_REFUSED = ("Could not reserve enough space", "Invalid maximum heap size", "Too small maximum heap",
                "Initial heap size set to a larger value", "insufficient memory for the Java Runtime")
#: ImageJ or the JVM ran out of heap while working.
OUT_OF_MEMORY = ("OutOfMemoryError", "<Out of memory>", "Java heap space", "out of memory")


#: Bio-Formats in an ImageJ 1 plugins root (``SCIOPS_IJ_PLUGINS``: where ``scripts/bioformats.sh`` puts it).
BIOFORMATS_JAR = "plugins/bioformats_package.jar"


def choose_launcher(kind: str, fiji: str | None, java: str | None, xvfb: str | None,
                    ij_jar: str | None, plugins_dir: str | None = None) -> dict[str, Any] | None:
    """The launcher for ``kind`` from what a machine has (paths, or None when missing).

    ``auto`` prefers Fiji. Used for this machine (:func:`detect_launcher`) and for a
    cluster's head node (from the existing backend's probe). ``plugins_dir``: an ImageJ 1
    plugins root holding Bio-Formats (Fiji brings its own).
    """
    if kind in ("auto", "fiji") and fiji:
        return {"kind": "fiji", "fiji": fiji, "bioformats": True}
    if kind in ("auto", "imagej1") and java and xvfb and ij_jar:
        return {"kind": "imagej1", "java": java, "ij_jar": ij_jar, "xvfb": xvfb,
                **({"plugins_dir": plugins_dir, "bioformats": True} if plugins_dir else {"bioformats": False})}
    return None


def plugins_root() -> str | None:
    """This machine's ImageJ 1 plugins root when it holds Bio-Formats, else None."""
    root = setting("SCIOPS_IJ_PLUGINS")
    return root if Path(root, BIOFORMATS_JAR).is_file() else None


def detect_launcher(kind: str = "auto") -> dict[str, Any] | None:
    """The launcher settings for the task manifest, or None when no ImageJ is installed here."""
    jar = setting("SCIOPS_IJ_JAR")
    launcher = choose_launcher(kind, setting("SCIOPS_FIJI") or shutil.which("ImageJ-linux64"),
                               shutil.which("java"), shutil.which("Xvfb"), jar if Path(jar).is_file() else None,
                               plugins_root())
    if launcher and launcher.get("plugins_dir"):
        launcher["bioformats_version"] = jvm.bioformats_version(launcher)
    return launcher


def require_launcher(kind: str) -> dict[str, Any]:
    launcher = detect_launcher(kind)
    if launcher is None:
        raise ConfigError([("launcher", f"no ImageJ found for launcher {kind!r} on this machine: install Debian's "
                                        "'imagej', 'xvfb' and a JRE (scripts/setup.sh does), or set SCIOPS_FIJI "
                                        "to a Fiji ImageJ-linux64")])
    return launcher


def confined(launcher: dict[str, Any] | None, project: Any = None) -> dict[str, Any] | None:
    """``launcher`` whose macros run in the bubblewrap sandbox (``sciops_node.sandbox``), unless
    ``SCIOPS_MACRO_SANDBOX`` is ``off``: the launcher of every JVM that runs a user's macro on this worker (the
    local backend's tasks, every backend's smoke run). :class:`ConfigError` naming the setting when bwrap cannot
    run here: a macro never runs unconfined unless an admin said so.

    Besides what every sandbox sees, the JVM may read SciOps's shipped macros and the ``project``'s own ``src/``
    (a macro may ``runMacro`` them)."""
    mode = setting("SCIOPS_MACRO_SANDBOX").strip().lower()
    if launcher is None or mode == "off":
        return launcher
    if mode != "bwrap":
        raise ConfigError([("launcher", f"SCIOPS_MACRO_SANDBOX={mode!r} is not a sandbox SciOps knows: 'bwrap' "
                                        "(the default) or 'off'")])
    spec = {"kind": "bwrap", "bwrap": "bwrap",
            "read": [str(MACRO_DIR)] + ([str(project.src_dir)] if project is not None else [])}
    why = sandbox.unusable(spec)
    if why:
        raise ConfigError([("launcher", why)])
    return {**launcher, "sandbox": spec}


def image_problem(path: Path, heap_mb: int) -> tuple[str, str] | None:
    """Why ImageJ cannot open ``path``, from its header alone: ``(field, reason)``, or None.

    ``field`` is ``input`` (empty, truncated, not the format its name says) or ``memory``
    (one plane is larger than the JVM heap). A format SciOps does not know is not judged
    (None): ImageJ may read it, and the smoke run decides.
    """
    size = path.stat().st_size
    if size == 0:
        return "input", "empty file (0 bytes)"
    with open(path, "rb") as fh:
        head = fh.read(16)
    suffix = path.suffix.lower()
    claimed = next((magics for suffixes, magics in MAGIC.items() if suffix in suffixes), None)
    if claimed and not head.startswith(claimed):
        kind = next((s[0][1:].upper() for s, ms in MAGIC.items() if any(head.startswith(m) for m in ms)), None)
        return "input", (f"named {suffix} but it is {'a ' + kind if kind else 'not an image'} file (it starts with "
                         f"{head[:8]!r}): corrupt, or renamed")
    if not head.startswith(HEADER_READ):
        return None
    try:
        width, height, plane_bytes, data_end = _header(path, head)
    except Exception as exc:  # noqa: BLE001 - any reader error is the file's: say which
        return "input", f"unreadable header ({type(exc).__name__}: {str(exc)[:200]}): corrupt or cut short"
    if data_end and data_end > size:
        return "input", (f"truncated: its image data runs to byte {data_end:,} but the file has {size:,} bytes "
                         "(an interrupted copy?)")
    plane_mb = plane_bytes / 2**20
    if plane_mb > heap_mb * 0.9:
        return "memory", (f"one {width}×{height} plane is {plane_mb:,.0f} MB, more than the {heap_mb} MB JVM heap "
                          f"this memory gives; set memory to at least {memory_for(plane_mb)}")
    return None


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "offset" in record.getMessage():
            self.messages.append(record.getMessage())


def _multi(path: Path) -> bool:
    """Whether all pages are checked: the files read through Bio-Formats (a plain TIFF: its first page)."""
    return needs_bioformats(path.name)


def _header(path: Path, head: bytes) -> tuple[int, int, int, int]:
    """``(width, height, bytes of one plane, where the pixel data ends)`` without reading pixels."""
    if head[:2] in (b"II", b"MM"):
        import tifffile

        # tifffile logs, and does not raise, an IFD offset past the end of the file (a copy cut short)
        broken = _Capture()
        logging.getLogger("tifffile").addHandler(broken)
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages.first
                width, height = int(page.imagewidth), int(page.imagelength)
                spp = int(page.samplesperpixel)
                bits = int(page.bitspersample)
                # every page of a file read through Bio-Formats (a series' planes, an OME-TIFF's series), as
                # frames (only the IFD's offsets and sizes: 0.1 s for 2,000 pages here): this is what tells
                # validate such a TIFF is whole, since Bio-Formats reads its metadata there, not its planes
                if _multi(path):
                    tif.pages.useframes = True
                    pages = list(tif.pages)
                else:
                    pages = [page]
                end = max((o + c for p in pages if hasattr(p, "dataoffsets")
                           for o, c in zip(p.dataoffsets, p.databytecounts)), default=0)
        finally:
            logging.getLogger("tifffile").removeHandler(broken)
        if broken.messages and end <= path.stat().st_size:
            end = path.stat().st_size + 1   # reported as truncated
        return width, height, width * height * spp * max((bits + 7) // 8, 1), int(end)   # 12-bit: 2 bytes
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
        return width, height, width * height * len(im.getbands()), 0


def smoke_candidates(input_dir: Path, images: list[str], memory_mb: int, n: int = SMOKE_IMAGES,
                     scan: int = SMOKE_SCAN) -> list[str]:
    """The first few images ImageJ can open, judged from their headers (:func:`image_problem`).

    A bad image is the image's fault, not the macro's: it is skipped here (and ends in
    failures.csv with ImageJ's own words). When none of the first ``scan`` images present here
    (on S3, the ones fetched) can be opened, :class:`ConfigError` names ``input`` and/or
    ``memory`` with the files and their reasons.
    """
    heap = contract.heap_mb(memory_mb)
    out, problems, checked = [], [], 0
    for rel in images:
        path = input_dir / contract.unit_parts(rel)[0]   # a series: its file
        if not path.is_file():
            continue   # on S3 only the first few images are fetched before the smoke run
        checked += 1
        problem = image_problem(path, heap)
        if problem is None:
            out.append(rel)
        else:
            problems.append((rel, *problem))
        if len(out) == n or checked == scan:
            break
    if out:
        if problems:
            log.warning("smoke run skips %d image(s) ImageJ cannot open: %s", len(problems),
                        "; ".join(f"{rel}: {why}" for rel, _, why in problems[:5]))
        return out
    if not problems:
        raise ConfigError([("input", "no image to smoke-test: none of the matching images is present on this worker")])
    by_field: dict[str, list[str]] = {}
    for rel, field, why in problems:
        by_field.setdefault(field, []).append(f"{rel}: {why}")
    what = f"all {checked} image(s) checked" if checked < len(images) else f"every one of the {checked} image(s)"
    fixes = {"input": "replace or remove these files in input/ (copy them again from the instrument), or narrow "
                      "file_pattern",
             "memory": "raise memory (or process the images tile by tile in the macro)"}
    raise ConfigError([(field, f"{what} in input/ cannot be opened by ImageJ: " + "; ".join(lines[:5])
                        + (f" (and {len(lines) - 5} more)" if len(lines) > 5 else "") + f". Fix: {fixes[field]}.")
                       for field, lines in by_field.items()])


def smoke_run(manifest: Manifest | dict[str, Any], images: list[str]) -> dict[str, Any]:
    """Run the macro on a few images with short stall/timeout limits, in a scratch folder.

    Passes as soon as one image succeeds (a corrupt image must not fail the run);
    raises :class:`ConfigError` on ``macro`` when none does, with the first error.
    Returns the runner's summary (with the ImageJ version).
    """
    manifest = Manifest.of(manifest)
    with tempfile.TemporaryDirectory(prefix="sciops-smoke-") as tmp:
        m = dataclasses.replace(manifest, work_dir=tmp, run_dir=tmp,
                                stall_seconds=min(manifest.stall_seconds, SMOKE_STALL_S),
                                image_timeout_s=min(manifest.image_timeout_s, SMOKE_TIMEOUT_S))
        mpath = m.dump(contract.manifest_path(tmp))
        status = Path(tmp, "smoke.jsonl")
        runner = Path(manifest.driver_path).with_name("sciops_task.py")
        argv = [sys.executable, str(runner), "--manifest", str(mpath), "--status-file", str(status),
                *(f"--images={img}" for img in images)]  # "=": an image named "-x.tif" is not an option
        log.info("smoke run of %s on %s", manifest.macro_path, ", ".join(images))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=len(images) * (SMOKE_TIMEOUT_S + 60))
        # final statuses only (a "begin" line marks an image starting)
        records = [r for r in (json.loads(x) for x in status.read_text().splitlines()) if r.get("status") != "begin"] \
            if status.exists() else []
        summary = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        if any(r["status"] == "ok" for r in records):
            return summary
        smoke_log = Path(contract.smoke_log_path(tmp))
        text = smoke_log.read_text(errors="replace") if smoke_log.exists() else proc.stderr
        raise ConfigError([smoke_verdict(images, records, summary, text, manifest)])


def smoke_verdict(images: list[str], records: list[dict[str, Any]], summary: dict[str, Any], log_text: str,
                  manifest: Manifest) -> tuple[str, str]:
    """``(field, message)`` for a smoke run in which no image succeeded: who is to blame, and the fix."""
    tail = log_text[-1500:]
    memory = manifest.memory_mb
    if not records:   # no image ever began: the JVM did not start (or stalled before the first image)
        if any(s in log_text for s in HEAP_REFUSED):
            return "memory", (f"the JVM could not reserve its heap for memory={memory} MB on this worker (see the "
                              f"log below); lower memory to what a node has free. Log tail:\n{tail}")
        why = summary.get("error") or "no output from the task runner"
        return "launcher", (f"ImageJ did not start on this worker ({why[:400]}); check the launcher "
                            f"({(manifest.launcher or {}).get('kind')}: Debian's imagej, xvfb and a JRE, or "
                            f"SCIOPS_FIJI / SCIOPS_IJ_JAR). Log tail:\n{tail}")
    first = records[0]
    if any(s.lower() in (r.get("error") or "").lower() for r in records for s in OUT_OF_MEMORY) or \
            any(s in log_text for s in OUT_OF_MEMORY):
        return "memory", (f"ImageJ ran out of memory on {first['image']} with memory={memory} MB: raise memory "
                          f"(or make the macro work on smaller pieces). Log tail:\n{tail}")
    return "macro", (f"smoke run failed on {first['image']}: {first['error']}. Fix the macro (run it on that image "
                     f"in ImageJ to see the error). Log tail:\n{tail}")
