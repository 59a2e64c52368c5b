#!/usr/bin/env python3
"""localq: a tiny array-job scheduler for one machine (the ``local`` backend).

It gives the Airflow worker itself the same contract as Grid Engine or Slurm, so
the ``local`` backend goes through the very code path a cluster does: submit an
array and get a job id back at once, ask the state of every task in one call,
read accounting (exit code, seconds, max RSS) per task, cancel.

A submitted job is a folder ``SPOOL/JOBID/`` holding ``job.json`` and one
``tasks/N.json`` per array task; a detached server process runs the tasks with
at most ``--slots`` at a time and updates those files. Standard library only.

    localq.py submit --spool DIR --name NAME --slots N --tasks 1,2,3 --log-dir D -- CMD ARG...
    localq.py status --spool DIR JOBID      # JSON {task: state}
    localq.py acct   --spool DIR JOBID      # JSON {task: {state, exit_code, seconds, max_rss_mb}}
    localq.py cancel --spool DIR JOBID      # harmless when the job is gone
    localq.py find   --spool DIR NAME       # ids of the jobs submitted under NAME, one a line
    localq.py list   --spool DIR            # the jobs still running: JSON {id, name, workdir}, one a line
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid

PENDING, RUNNING, DONE, FAILED, CANCELLED, LOST = "pending", "running", "done", "failed", "cancelled", "lost"
FINAL = {DONE, FAILED, CANCELLED, LOST}


def write_json(path, data):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)  # readers never see half a file


def read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def alive(pid):
    """Is the process there (and not a zombie nobody reaped yet)?"""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def submit(args):
    job_id = "local-" + uuid.uuid4().hex[:10]
    job_dir = os.path.join(args.spool, job_id)
    os.makedirs(os.path.join(job_dir, "tasks"))
    os.makedirs(args.log_dir, exist_ok=True)
    tasks = [int(t) for t in args.tasks.split(",")]
    job = {"id": job_id, "name": args.name, "slots": args.slots, "tasks": tasks, "command": args.command,
           "log_dir": args.log_dir, "workdir": args.workdir or os.getcwd(), "env": dict(kv.split("=", 1) for kv in args.env),
           "submitted": time.time(), "server_pid": None}
    for t in tasks:
        write_json(os.path.join(job_dir, "tasks", "%d.json" % t), {"state": PENDING})
    write_json(os.path.join(job_dir, "job.json"), job)
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_serve", job_dir],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(job_dir, "server.log"), "ab"), start_new_session=True)
    job["server_pid"] = server.pid
    write_json(os.path.join(job_dir, "job.json"), job)
    print(job_id)
    return 0


def serve(job_dir):
    job = read_json(os.path.join(job_dir, "job.json"))
    # pid -> (task, start, Popen). The Popen object must stay referenced: a collected one
    # is reaped by subprocess's own cleanup, and its exit status would be lost to wait4.
    running = {}
    queue = list(job["tasks"])
    cancelled = []

    def on_term(signum, frame):
        # Kill what runs now; the wait loop below reaps them and records CANCELLED.
        cancelled.append(True)
        for pid in list(running):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already ended: nothing to cancel

    signal.signal(signal.SIGTERM, on_term)
    task_file = lambda t: os.path.join(job_dir, "tasks", "%d.json" % t)  # noqa: E731
    while queue or running:
        if cancelled and queue:
            for t in queue:
                write_json(task_file(t), {"state": CANCELLED})
            queue = []
        while queue and len(running) < job["slots"]:
            t = queue.pop(0)
            env = dict(os.environ, **job["env"])
            env.update(SCIOPS_TASK_ID=str(t), SCIOPS_JOB_ID=job["id"])
            name = os.path.join(job["log_dir"], "%s.%s.%d" % (job["name"], job["id"], t))
            with open(name + ".out", "ab") as out, open(name + ".err", "ab") as err:
                proc = subprocess.Popen(job["command"], cwd=job["workdir"], env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err, start_new_session=True)
            start = time.time()
            running[proc.pid] = (t, start, proc)
            write_json(task_file(t), {"state": RUNNING, "pid": proc.pid, "start": start})
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in running:
            continue
        t, start, proc = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # reaped here; keep subprocess from waiting on it again
        state = CANCELLED if cancelled else (DONE if code == 0 else FAILED)
        rec = {"state": state, "pid": pid, "start": start, "end": time.time(),
               "exit_code": code if code >= 0 else None, "signal": -code if code < 0 else None,
               "max_rss_mb": round(usage.ru_maxrss / 1024.0, 1)}
        write_json(task_file(t), rec)
    return 0


def load(spool, job_id):
    job_dir = os.path.join(spool, job_id)
    if not os.path.isfile(os.path.join(job_dir, "job.json")):
        return None, {}
    job = read_json(os.path.join(job_dir, "job.json"))
    tasks = {}
    server_alive = job.get("server_pid") and alive(job["server_pid"])
    for t in job["tasks"]:
        try:
            rec = read_json(os.path.join(job_dir, "tasks", "%d.json" % t))
        except (OSError, ValueError):
            rec = {"state": PENDING}
        if rec["state"] not in FINAL and not server_alive:
            rec["state"] = LOST  # the server died (machine restart, kill -9): this task will not finish
        tasks[t] = rec
    return job, tasks


def _job_ids(spool):
    """The spool's job folders, in order (none when the spool was never made)."""
    try:
        return sorted(os.listdir(spool))
    except FileNotFoundError:
        return []


def find(spool, name):
    """Print the ids of the jobs submitted under ``name`` (a job folder without job.json is half made: skipped)."""
    for job_id in _job_ids(spool):
        try:
            if read_json(os.path.join(spool, job_id, "job.json")).get("name") == name:
                print(job_id)
        except (OSError, ValueError):
            continue
    return 0


def list_live(spool):
    """Print the jobs whose server still runs a task (what a cancel can stop): JSON, one a line."""
    for job_id in _job_ids(spool):
        try:
            job, tasks = load(spool, job_id)
        except (OSError, ValueError):
            continue  # a job folder half made or half removed
        if job and job.get("server_pid") and alive(job["server_pid"]) and \
                any(rec["state"] not in FINAL for rec in tasks.values()):
            print(json.dumps({"id": job_id, "name": job["name"], "workdir": job["workdir"]}))
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_serve"]:
        return serve(argv[1])
    ap = argparse.ArgumentParser(description="a tiny array-job scheduler for one machine")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit")
    s.add_argument("--spool", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    s.add_argument("--tasks", required=True)
    s.add_argument("--log-dir", required=True)
    s.add_argument("--workdir")
    s.add_argument("--env", action="append", default=[])
    s.add_argument("command", nargs=argparse.REMAINDER)
    for name in ("status", "acct", "cancel"):
        p = sub.add_parser(name)
        p.add_argument("--spool", required=True)
        p.add_argument("job_id")
    f = sub.add_parser("find")
    f.add_argument("--spool", required=True)
    f.add_argument("name")
    li = sub.add_parser("list")
    li.add_argument("--spool", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "find":
        return find(args.spool, args.name)
    if args.cmd == "list":
        return list_live(args.spool)
    if args.cmd == "submit":
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        if not args.command:
            ap.error("submit needs a command after --")
        return submit(args)
    job, tasks = load(args.spool, args.job_id)
    if args.cmd == "cancel":
        if job and job.get("server_pid") and alive(job["server_pid"]):
            os.kill(job["server_pid"], signal.SIGTERM)
        return 0  # cancelling a job that is gone is not an error
    if job is None:
        print("localq: no such job %s" % args.job_id, file=sys.stderr)
        return 1
    if args.cmd == "status":
        print(json.dumps({str(t): rec["state"] for t, rec in tasks.items()}))
    else:
        print(json.dumps({str(t): rec for t, rec in tasks.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
