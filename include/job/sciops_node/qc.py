"""QC overlays: which units get one, and what the driver says it drew (issue 33).

After the user's macro, the driver (``driver.ijm``, ``saveQc``) saves ``qc.png`` in the unit's
output folder: a contrast-stretched copy of the plane the macro saw (the input opened again, its
first plane; long side at most 384 px) with the outlines of the objects the macro measured: the ROI
Manager's ROIs, else a small circle at each X/Y of the Results table, else the plain image. A macro
that wrote its own ``qc.png`` keeps it.

Which units: the run's ``qc_images``. ``all``: every unit. ``none``: none. ``sample`` (the default):
one unit in :data:`SAMPLE_EVERY` (chosen by a hash of its name: the same units on every attempt and
every backend), and every unit the driver finds unusual as it goes: no objects where the units before
it had some, or log(1 + object count) beyond :data:`DRIVER_MADS` median absolute deviations of this
JVM's units so far. Why not ``all``: an overlay costs ImageJ ~15-20 % of count_nuclei's own time (open
the image again, stretch, scale, draw, PNG, in one Java call: SciopsQc.java; bench/bench_qc.py, on BBBC002
and on 64 x 64 images alike) and 3-70 KB; at 100,000 images of 512 x 512 that is ~7 GB. The sample is
~2.5 % of the units plus the odd ones: ~0.6-1.4 % of the macro's time and ~0.25 GB at 100,000 images, and
it still draws the images a scientist needs to see (the report's outliers, by count).

The driver's END line says what it drew, as its fifth field (:func:`parse_drawn`):
``rois <n>``, ``xy <n>``, ``plain``, ``own`` (the macro's own qc.png) or empty (no overlay).
"""
from __future__ import annotations

import os
import zlib

QC_FILE = "qc.png"
MODES = ("all", "sample", "none")
#: ``sample``: one unit in this many, by the hash of its name.
SAMPLE_EVERY = 40
#: ``sample``: the driver draws a unit whose object count is this many MADs from the JVM's median.
DRIVER_MADS = 4

#: The per-unit flag the job file carries (driver.ijm): draw, draw if unusual, never.
DRAW, IF_UNUSUAL, NEVER = "1", "a", "0"


def sampled(unit):
    """Whether ``unit`` is in the ``sample`` mode's fixed sample (the same on every attempt)."""
    return zlib.crc32(unit.encode("utf-8")) % SAMPLE_EVERY == 0


def flag(mode, unit):
    """The job file's QC field of ``unit`` under the run's ``qc_images``."""
    if mode == "none":
        return NEVER
    if mode == "all" or sampled(unit):
        return DRAW
    return IF_UNUSUAL


def parse_drawn(field):
    """``(kind, objects)`` from the END line's QC field: ``("rois", 18)``, ``("own", None)``; None when nothing."""
    field = (field or "").strip()
    if not field:
        return None
    kind, _, n = field.partition(" ")
    return kind, int(n) if n.isdigit() else None


def remove(outdir):
    """A failed unit keeps no overlay (the report lists it with its reason instead)."""
    try:
        os.remove(os.path.join(outdir, QC_FILE))
    except OSError:
        pass
