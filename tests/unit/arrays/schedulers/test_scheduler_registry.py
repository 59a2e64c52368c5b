"""The scheduler registry: one table, name → class, each class named as its row."""
from __future__ import annotations

import pytest

from sciops.arrays.schedulers import SCHEDULER_CLASSES, get_scheduler, scheduler_class


@pytest.mark.parametrize("name", sorted(SCHEDULER_CLASSES))
def test_each_row_names_a_class_of_that_name(name):
    cls = scheduler_class(name)
    assert cls.name == name and cls.__module__ == f"sciops.arrays.schedulers.{name}"


def test_get_scheduler_makes_one_with_its_options(tmp_path):
    sched = get_scheduler("local", spool=str(tmp_path), slots=3)
    assert sched.name == "local" and sched.slots == 3
    assert get_scheduler("slurm", partition="gpu").name == "slurm"
    with pytest.raises(ValueError, match="unknown scheduler 'pbs'"):
        get_scheduler("pbs")
