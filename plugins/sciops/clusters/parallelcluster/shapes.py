"""EC2 instance shapes: what a compute node of each known type holds, and what of it tasks get."""
from __future__ import annotations

#: Instance types SciOps knows: vCPUs and memory (GiB), from the EC2 instance type pages.
INSTANCE_TYPES: dict[str, tuple[int, float]] = {
    "t3.medium": (2, 4), "t3.large": (2, 8), "t3.xlarge": (4, 16),
    "m5.large": (2, 8), "m5.xlarge": (4, 16), "m5.2xlarge": (8, 32), "m5.4xlarge": (16, 64),
    "c5.large": (2, 4), "c5.xlarge": (4, 8), "c5.2xlarge": (8, 16), "c5.4xlarge": (16, 32),
    "c6i.xlarge": (4, 8), "c6i.2xlarge": (8, 16), "r5.large": (2, 16), "r5.xlarge": (4, 32),
    "r5.2xlarge": (8, 64),
}
#: Memory the OS, Slurm and Xvfb keep on a compute node, beyond the tasks' grants.
NODE_RESERVED_MB = 1024


def fits(instance_type: str, memory_mb: int) -> bool:
    """Does one task of ``memory_mb`` fit a node of ``instance_type``, beside what the node keeps?"""
    return memory_mb + NODE_RESERVED_MB <= INSTANCE_TYPES[instance_type][1] * 1024


def tasks_per_node(instance_type: str, memory_mb: int) -> int:
    """Tasks of ``memory_mb`` one node of ``instance_type`` runs at once: one a vCPU at most, at least one."""
    cpus, gib = INSTANCE_TYPES[instance_type]
    return max(1, min(cpus, int((gib * 1024 - NODE_RESERVED_MB) // max(memory_mb, 1))))
