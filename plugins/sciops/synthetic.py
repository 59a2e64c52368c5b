"""Synthetic nucleus images with a known object count (for tests and the demo).

Writes plain uncompressed 8-bit grayscale TIFFs with numpy and the standard library,
so no imaging package is needed to make test data.
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
    centres: list[tuple[int, int]] = []
    margin = radius + 3
    while len(centres) < count:
        c = tuple(int(v) for v in rng.integers(margin, size - margin, 2))
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > (3 * radius) ** 2 for o in centres):
            centres.append(c)
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
