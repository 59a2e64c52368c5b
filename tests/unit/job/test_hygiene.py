"""sciops_node.hygiene: the scheduler's environment, the macro's environment, CPU ticks."""
from __future__ import annotations

import os

from sciops_node import hygiene


def test_task_id_from_env():
    assert hygiene.task_id_from_env({"SGE_TASK_ID": "undefined", "SLURM_ARRAY_TASK_ID": "7"}) == 7
    assert hygiene.task_id_from_env({"SCIOPS_TASK_ID": "3", "SGE_TASK_ID": "9"}) == 3
    assert hygiene.task_id_from_env({}) is None


def test_task_map_for_resubmitted_scattered_chunks():
    env = {"SGE_TASK_ID": "2", "SCIOPS_TASK_MAP": "4:7:9"}
    assert hygiene.task_id_from_env(env) == 7
    assert hygiene.task_id_from_env({"SCIOPS_TASK_ID": "2", "SCIOPS_TASK_MAP": "4:7:9"}) == 2  # localq: already a chunk


def test_cpu_ticks_of_self_and_of_nobody():
    assert hygiene.cpu_ticks(os.getpid()) >= 0
    assert hygiene.cpu_ticks(2 ** 22 + 12345) is None


def test_macro_env_is_an_allow_list():
    """Macros are user code: the worker's keys and settings never reach their JVM."""
    worker = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "SGE_TASK_ID": "3", "HOME": "/root",
              "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t", "SSH_AUTH_SOCK": "/tmp/agent",
              "AIRFLOW__CORE__FERNET_KEY": "f", "AIRFLOW_CONN_SCIOPS_SLACK": "c", "SLACK_TOKEN": "x",
              "LD_PRELOAD": "/evil.so", "JAVA_TOOL_OPTIONS": "-javaagent:/evil.jar"}
    env = hygiene.macro_env(worker, "/scratch/home", "/scratch/tmp", ":7")
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "SGE_TASK_ID": "3",
                   "HOME": "/scratch/home", "TMPDIR": "/scratch/tmp", "DISPLAY": ":7"}


def test_lost_attempts_and_deaths_under():
    assert hygiene.lost_attempts(3, {"SCIOPS_LOST": "3.2:5.2:3.4"}) == {2, 4}
    assert hygiene.lost_attempts(3, {}) == set()
