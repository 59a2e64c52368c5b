"""What heap an image needs: the ``memory`` to ask for so that the JVM holds a plane (validate, Bio-Formats)."""
from __future__ import annotations

from sciops_node.contract import heap_mb


def memory_for(plane_mb: float) -> str:
    """A ``memory`` value whose heap holds three planes (the image, a copy the macro makes, a mask)."""
    need = 3 * plane_mb
    granted = 512
    while heap_mb(granted) < need:
        granted *= 2
    return f"{granted // 1024}G" if granted >= 1024 else f"{granted}M"
