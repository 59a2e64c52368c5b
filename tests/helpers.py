"""Things tests share that are not fixtures (imported as ``helpers``: tests/ is on sys.path)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Numbers worth seeing in every run's output; conftest prints them at the end.
REPORT: dict[str, str] = {}
