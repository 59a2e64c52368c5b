"""Synthetic nucleus images with a known object count (for tests and the demo).

Writes plain uncompressed 8-bit grayscale TIFFs with numpy and the standard library; the
two-channel stacks and RGB brightfield images go through tifffile (pinned, used by validate).
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_tiff(path: Path | str, img: np.ndarray) -> None:
    """A minimal baseline TIFF (one strip, 8-bit, min-is-black)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape
    data = img.tobytes()
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1),
        (273, 4, 8), (277, 3, 1), (278, 4, h), (279, 4, len(data)),
    ]
    ifd_offset = 8 + len(data)
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + data)
    out += struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        out += struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    out += struct.pack("<I", 0)
    Path(path).write_bytes(bytes(out))


def nuclei_image(count: int, size: int = 256, radius: int = 7, seed: int = 0) -> np.ndarray:
    """``count`` bright disks on a dark, slightly noisy background, never touching."""
    rng = np.random.default_rng(seed)
    img = rng.normal(12, 3, (size, size))
    centres = _centres(rng, count, size, radius)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = yy ** 2 + xx ** 2 <= radius ** 2      # drawn in a small window: cheap on big images
    for cy, cx in centres:
        window = img[cy - radius:cy + radius + 1, cx - radius:cx + radius + 1]
        window[disk] = rng.integers(150, 220)
    return np.clip(img, 0, 255)


def make_images(folder: Path | str, counts: dict[str, int], size: int = 256) -> dict[str, int]:
    """Write one image per ``name: count``; returns the same mapping."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, n) in enumerate(sorted(counts.items())):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_tiff(folder / name, nuclei_image(n, size=size, seed=i))
    return counts


def _centres(rng, count: int, size: int, radius: int) -> list[tuple[int, int]]:
    centres: list[tuple[int, int]] = []
    margin = radius + 3
    while len(centres) < count:
        c = tuple(int(v) for v in rng.integers(margin, size - margin, 2))
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > (3 * radius) ** 2 for o in centres):
            centres.append(c)
    return centres


def marker_pair(count: int, positive: int, size: int = 256, radius: int = 7,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A nuclear stain image with ``count`` nuclei and a marker image in which ``positive`` of them are
    bright (Ki67, pH3, propidium iodide...): the negatives carry a faint marker signal (20–45 over a
    background of ~10), the positives 110–200, so any threshold between them gives the exact answer."""
    rng = np.random.default_rng(seed)
    nuclei = rng.normal(12, 3, (size, size))
    marker = rng.normal(10, 3, (size, size))
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = yy ** 2 + xx ** 2 <= radius ** 2
    chosen = set(rng.choice(count, size=positive, replace=False).tolist()) if positive else set()
    for i, (cy, cx) in enumerate(_centres(rng, count, size, radius)):
        win = (slice(cy - radius, cy + radius + 1), slice(cx - radius, cx + radius + 1))
        nuclei[win][disk] = rng.integers(150, 220)
        marker[win][disk] = rng.integers(110, 200) if i in chosen else rng.integers(20, 45)
    return np.clip(nuclei, 0, 255).astype(np.uint8), np.clip(marker, 0, 255).astype(np.uint8)


def make_marker_pairs(folder: Path | str, specs: dict[str, tuple[int, int]], size: int = 256,
                      suffixes: tuple[str, str] = ("d0", "d1"), stack: bool = False) -> dict[str, tuple[int, int]]:
    """For each ``stem: (nuclei, positive)``: ``<stem>_<suffixes[0]>.tif`` (nuclei) and
    ``<stem>_<suffixes[1]>.tif`` (marker), or with ``stack`` one two-channel TIFF ``<stem>.tif``."""
    import tifffile

    folder = Path(folder)
    for i, (stem, (count, positive)) in enumerate(sorted(specs.items())):
        nuclei, marker = marker_pair(count, positive, size=size, seed=100 + i)
        (folder / stem).parent.mkdir(parents=True, exist_ok=True)
        if stack:
            tifffile.imwrite(folder / f"{stem}.tif", np.stack([nuclei, marker]), imagej=True,
                             metadata={"axes": "CYX"})
        else:
            write_tiff(folder / f"{stem}_{suffixes[0]}.tif", nuclei)
            write_tiff(folder / f"{stem}_{suffixes[1]}.tif", marker)
    return specs


#: Ruifrok & Johnston's optical density vectors (RGB) of haematoxylin and DAB, as ImageJ/Fiji's
#: Colour Deconvolution plugin has them for "H DAB".
HEMATOXYLIN = (0.650, 0.704, 0.286)
DAB = (0.268, 0.570, 0.776)


def dab_image(count: int, positive: int, size: int = 256, radius: int = 7, seed: int = 0) -> np.ndarray:
    """A brightfield RGB image by the Beer–Lambert law: ``count`` haematoxylin-stained nuclei on a light
    background, ``positive`` of them also DAB-stained (brown), with a little stain everywhere."""
    rng = np.random.default_rng(seed)
    h = np.abs(rng.normal(0.03, 0.01, (size, size)))
    d = np.abs(rng.normal(0.01, 0.005, (size, size)))
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = yy ** 2 + xx ** 2 <= radius ** 2
    chosen = set(rng.choice(count, size=positive, replace=False).tolist()) if positive else set()
    for i, (cy, cx) in enumerate(_centres(rng, count, size, radius)):
        win = (slice(cy - radius, cy + radius + 1), slice(cx - radius, cx + radius + 1))
        h[win][disk] = rng.uniform(0.5, 0.8) if i not in chosen else rng.uniform(0.2, 0.4)
        if i in chosen:
            d[win][disk] = rng.uniform(0.6, 1.0)
    od = h[..., None] * np.array(HEMATOXYLIN) + d[..., None] * np.array(DAB)
    return np.clip(250 * np.exp(-od), 0, 255).astype(np.uint8)


def make_dab_images(folder: Path | str, specs: dict[str, tuple[int, int]],
                    size: int = 256) -> dict[str, tuple[int, int]]:
    """One RGB brightfield TIFF per ``name: (nuclei, DAB-positive)``."""
    import tifffile

    folder = Path(folder)
    for i, (name, (count, positive)) in enumerate(sorted(specs.items())):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / name, dab_image(count, positive, size=size, seed=200 + i), photometric="rgb")
    return specs


def ome_tiff(path: Path | str, counts: list[int], size: int = 256, channels: int = 2, pyramid: bool = False,
             names: list[str] | None = None) -> dict[str, int]:
    """An OME-TIFF with one series per entry of ``counts`` (series ``i`` holds ``counts[i]`` nuclei in its
    first channel), 16-bit, ``channels`` channels (the others: background noise), for Bio-Formats tests.

    ``pyramid``: each series also carries two lower resolutions (SubIFDs), as a slide scanner writes.
    Returns ``{"<file>#<series>": count}``: the units SciOps makes of it.
    """
    import tifffile

    path = Path(path)
    names = names or [f"position {i + 1}" for i in range(len(counts))]
    out = {}
    with tifffile.TiffWriter(path, ome=True) as tw:
        for i, count in enumerate(counts):
            planes = np.zeros((channels, size, size), np.uint16)
            planes[0] = nuclei_image(count, size, seed=i).astype(np.uint16) * 64   # 8-bit values in 16 bits
            rng = np.random.default_rng(100 + i)
            for c in range(1, channels):
                planes[c] = rng.normal(200, 20, (size, size)).clip(0).astype(np.uint16)
            meta = {"axes": "CYX", "Name": names[i]}
            if pyramid:
                tw.write(planes, subifds=2, tile=(64, 64), metadata=meta)
                for level in (2, 4):
                    tw.write(planes[:, ::level, ::level], subfiletype=1, tile=(64, 64))
            else:
                tw.write(planes, metadata=meta)
            out[f"{path.name}#{i}"] = count
    return out
