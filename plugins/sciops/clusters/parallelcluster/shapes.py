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
