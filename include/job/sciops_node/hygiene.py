"""Process hygiene and the scheduler's environment: what a task runner does so that it leaves nothing behind.

* the JVM and Xvfb die with the runner, however it dies (:func:`die_with`);
* scratch folders of runners that were killed are removed (:func:`remove_stale_scratch`);
* a macro's JVM inherits an allow-list of variables only (:func:`macro_env`: macros are user code);
* the task's chunk, its chain and its lost attempts come from the environment the scheduler (or
  ``sciops.arrays.run`` through it) sets: :func:`task_id_from_env`, :func:`chain_from_env`, :func:`lost_attempts`;
* :func:`cpu_ticks` tells a JVM that computes from one that hangs.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile

#: Where the task number comes from, first found first (``SGE_TASK_ID`` is "undefined" outside arrays).
TASK_ENV_VARS = ("SCIOPS_TASK_ID", "SGE_TASK_ID", "SLURM_ARRAY_TASK_ID")
#: The only variables a macro's JVM inherits (macros are user code: the worker's AWS keys, SSH
#: agent, Slack token and Airflow settings stay out). HOME and TMPDIR point at the JVM's scratch.
MACRO_ENV_ALLOW = ("PATH", "LANG", "LANGUAGE", "TZ", "JAVA_HOME", "USER", "LOGNAME", "SHELL", "TERM",
                   "SCIOPS_TASK_ID", "SCIOPS_JOB_ID", "SCIOPS_ATTEMPT", "SGE_TASK_ID", "JOB_ID",
                   "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID")


#: prctl(PR_SET_PDEATHSIG): the kernel signals a child when the process that made it dies.
PR_SET_PDEATHSIG = 1
#: A runner's scratch folder is ``sciops-task<N>-<pid>-<random>``: the pid tells a dead runner's.
SCRATCH_PREFIX = "sciops-task"


def die_with(parent_pid):
    """A ``preexec_fn``: the child (JVM, Xvfb) is SIGKILLed when the runner dies, however it dies.

    They run in sessions of their own (the runner kills a stuck JVM's whole group), so a
    ``kill -9`` of the runner, the OOM killer or a scheduler that kills only the task's
    process would otherwise leave them running, Xvfb for ever. Linux only; elsewhere a no-op.
    """
    def preexec():
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:   # the runner died between fork and prctl
            os._exit(1)
    return preexec


def remove_stale_scratch(base=None):
    """Remove scratch folders of runners that are gone (a SIGKILL leaves them; the name holds the pid)."""
    base = base or tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.split("-")   # sciops-task<N>-<pid>-<random>
        if not name.startswith(SCRATCH_PREFIX) or len(parts) < 4 or not parts[2].isdigit():
            continue
        path = os.path.join(base, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue   # alive (another user's, or ours still running)


def macro_env(environ, home, tmp, display=None):
    """The environment a macro's JVM gets: :data:`MACRO_ENV_ALLOW` and ``LC_*`` only."""
    env = {k: v for k, v in environ.items() if k in MACRO_ENV_ALLOW or k.startswith("LC_")}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=home, TMPDIR=tmp)
    if display:
        env["DISPLAY"] = display
    return env


def task_id_from_env(environ=None):
    """The chunk this task runs, from the scheduler's array index, or None.

    ``SCIOPS_TASK_MAP=2:5:9`` (a resubmission of scattered chunks as array 1-3) maps
    array index i to the i-th chunk listed.
    """
    environ = os.environ if environ is None else environ
    for var in TASK_ENV_VARS:
        value = environ.get(var, "")
        if value.isdigit():  # SGE sets "undefined" outside arrays
            index = int(value)
            mapping = environ.get("SCIOPS_TASK_MAP", "")
            if mapping and var != "SCIOPS_TASK_ID":
                return int(mapping.replace(",", ":").split(":")[index - 1])
            return index
    return None


def chain_from_env(task_id, environ=None):
    """The array's tasks after ``task_id`` this runner may chain (``SCIOPS_CHAIN=1,2,3``, or ``1:2:3`` from Grid
    Engine, whose ``qsub -v`` splits values at commas; set by the local and the SGE schedulers: see
    ``sciops_node.claims`` for how a claim's holder is known alive), or None: chaining off."""
    environ = os.environ if environ is None else environ
    tasks = [int(t) for t in environ.get("SCIOPS_CHAIN", "").replace(":", ",").split(",") if t.strip().isdigit()]
    if not tasks or task_id not in tasks:
        return None
    return tasks[tasks.index(task_id) + 1:]


def lost_attempts(task_id, environ=None):
    """The attempts of ``task_id`` the scheduler lost to a node (``SCIOPS_LOST=3.2:5.2`` = task.attempt)."""
    environ = os.environ if environ is None else environ
    out = set()
    for pair in filter(None, environ.get("SCIOPS_LOST", "").split(":")):
        task, _, attempt = pair.partition(".")
        if task.isdigit() and attempt.isdigit() and int(task) == task_id:
            out.add(int(attempt))
    return out


def cpu_ticks(pid):
    """User+system CPU ticks of a process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None
