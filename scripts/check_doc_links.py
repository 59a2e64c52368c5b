#!/usr/bin/env python3
"""Check the relative links of README.md and docs/*.md: every target file exists, every #anchor is a heading.

    python3 scripts/check_doc_links.py [FILE.md ...]

Anchors are GitHub's heading slugs (lowercase; punctuation other than '-' and '_' dropped;
spaces become '-'; a repeated heading gets -1, -2...). Links to http(s)/mailto are not checked.
Exits 1 and lists the broken links when there are any.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _text(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _text(path):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken(md: Path) -> list[str]:
    bad = []
    for line in _text(md):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (md.parent / file).resolve() if file else md
            if not dest.exists():
                bad.append(f"{md.relative_to(REPO)}: {target}: no file {dest}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{md.relative_to(REPO)}: {target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    return bad


def main(argv: list[str]) -> int:
    files = [Path(a).resolve() for a in argv] or [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    bad = [b for f in files for b in broken(f)]
    print("\n".join(bad) if bad else f"{len(files)} files: every relative link resolves")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
