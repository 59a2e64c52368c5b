"""SciOps: run Fiji/ImageJ macros over microscope images on HPC clusters, from Airflow.

The library behind the ``fiji_project`` DAG. ``plugins/`` is on ``sys.path`` for the
scheduler, the workers and the triggerer, so everything here imports as ``sciops.*``.
"""
from __future__ import annotations

import sys
from pathlib import Path

#: The repository's ``include/`` folder (shipped macros and the compute-node job files).
INCLUDE_DIR = Path(__file__).resolve().parents[2] / "include"
JOB_DIR = INCLUDE_DIR / "job"
MACRO_DIR = INCLUDE_DIR / "fiji_macros"

# The compute node's package (include/job/sciops_node: stdlib only, shipped to clusters as files) holds the
# one contract both sides read: the manifest, status lines, attempt summaries, task logs, chunk tables.
# It is not installed: this is the one place the Airflow side puts it on the import path.
if str(JOB_DIR) not in sys.path:
    sys.path.insert(0, str(JOB_DIR))

