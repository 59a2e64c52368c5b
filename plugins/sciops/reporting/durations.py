"""How long something took, said one way to people: report.html, the dashboard and the ``sciops`` command."""
from __future__ import annotations


def duration(seconds: float | None) -> str:
    """``0.4 s``, ``48 s``, ``1 min 06 s``, ``2 h 05 min``: readable at a glance, exact to the second under an hour
    (a tenth under ten seconds: a report's short phases are not all "0 s")."""
    if seconds is None:
        return ""
    if seconds < 9.95:
        return f"{max(seconds, 0):.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
