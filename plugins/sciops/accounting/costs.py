"""What runs cost: prices, node-hours, the arithmetic of an estimate. Pure pricing: the backends
(``sciops.clusters``) call it with what they run on; it knows no backend.

- EC2 instances (:func:`pcluster_cost`, the parallelcluster backend's bill): node-hours from the
  EC2 launch and terminate times of the instances tagged with the cluster's name (pcluster
  tags them ``parallelcluster:cluster-name``), priced on demand from the shipped table
  (``include/prices/aws_ec2.json``, dated, with its source; overridable) or, for spot
  instances, from EC2's spot price history over the instance's lifetime (time-weighted). EBS
  volumes by GB-month, prorated.
- By the hour (:func:`rate_cost`, the existing and local backends' bill): task-hours from the
  runners' own start/end times (the scheduler's accounting is the cross-check), times
  ``hourly_rate_usd`` (default 0).
- Before a run (:func:`rate_estimate`, :func:`nodes_estimate`): what a backend's ``estimate_for`` prices.

EC2 bills Linux instances per second with a 60 s minimum: that is what is charged here.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from sciops import INCLUDE_DIR
from sciops.settings import setting

log = logging.getLogger(__name__)

PRICES_FILE = INCLUDE_DIR / "prices" / "aws_ec2.json"
PRICES_VARIABLE = "sciops_prices"
MIN_BILLED_SECONDS = 60


def load_prices() -> dict[str, Any]:
    """The price table: ``SCIOPS_PRICES_FILE``, else the Airflow Variable ``sciops_prices``, else shipped."""
    path = setting("SCIOPS_PRICES_FILE")
    if path:
        return json.loads(Path(path).read_text())
    try:
        from airflow.sdk import Variable

        value = Variable.get(PRICES_VARIABLE, default=None)
        if value:
            return json.loads(value) if isinstance(value, str) else value
    except Exception:  # noqa: BLE001 - no Airflow context (CLI, tests): the shipped table
        pass
    return json.loads(PRICES_FILE.read_text())


def on_demand_price(prices: dict[str, Any], region: str, instance_type: str) -> float:
    try:
        return float(prices["on_demand_usd_per_hour"][region][instance_type])
    except KeyError:
        raise KeyError(f"no on-demand price for {instance_type} in {region} in the price table "
                       f"(as of {prices.get('as_of')}); add it to the sciops_prices Variable") from None


@dataclass
class Interval:
    """One instance's life: what it is and when it ran (epoch seconds)."""

    instance_type: str
    start: float
    end: float
    spot: bool = False
    instance_id: str = ""

    @property
    def billed_seconds(self) -> float:
        return max(self.end - self.start, MIN_BILLED_SECONDS)


def spot_price_over(history: list[tuple[float, float]], start: float, end: float) -> float:
    """Time-weighted mean spot price over [start, end] from ``(timestamp, usd_per_hour)`` steps.

    Each entry holds from its timestamp until the next one; the one in force at ``start`` is
    the latest at or before it (or the earliest, if the history starts later).
    """
    if not history:
        raise ValueError("no spot price history for the interval")
    steps = sorted(history)
    if end <= start:
        return next((p for t, p in reversed(steps) if t <= start), steps[0][1])
    total = 0.0
    for i, (t, price) in enumerate(steps):
        seg_start = max(t if i else min(t, start), start)
        seg_end = min(steps[i + 1][0] if i + 1 < len(steps) else end, end)
        if seg_end > seg_start:
            total += price * (seg_end - seg_start)
    return total / (end - start)


def instance_costs(intervals: Iterable[Interval], region: str, prices: dict[str, Any],
                   spot_history: dict[str, list[tuple[float, float]]] | None = None) -> dict[str, dict[str, float]]:
    """Per instance type: ``{"instances", "node_hours", "usd"}`` (node-hours as billed)."""
    out: dict[str, dict[str, float]] = {}
    for iv in intervals:
        hours = iv.billed_seconds / 3600
        if iv.spot:
            rate = spot_price_over((spot_history or {}).get(iv.instance_type, []), iv.start, iv.end)
        else:
            rate = on_demand_price(prices, region, iv.instance_type)
        key = f"{iv.instance_type} ({'spot' if iv.spot else 'on-demand'})"
        row = out.setdefault(key, {"instances": 0, "node_hours": 0.0, "usd": 0.0})
        row["instances"] += 1
        row["node_hours"] += hours
        row["usd"] += hours * rate
    return out


def ebs_cost(gb: float, hours: float, region: str, prices: dict[str, Any]) -> float:
    month = prices.get("hours_per_month", 730)
    return gb * float(prices["ebs_gp3_usd_per_gb_month"][region]) * hours / month


def task_intervals(work_dir: Path | str) -> list[dict[str, Any]]:
    """Every array task attempt the runners recorded: task, attempt, host, start, end, exit.

    A runner writes its summary when it starts and again when it ends. One killed outright
    (a lost node, a memory kill, qdel's SIGKILL) never wrote its end: it is taken from the
    scheduler's accounting of that attempt (``attempts.json``: start + elapsed seconds), else
    from when SciOps saw the attempt end or cancelled it (an upper bound). ``lost`` marks
    attempts whose node was lost: their time is paid for too.
    """
    seen: dict[tuple[int, int], dict[str, Any]] = {}
    try:
        for entry in json.loads(Path(work_dir, "attempts.json").read_text()):
            for t, a in entry.get("accounting", {}).items():
                seen[(int(t), entry["attempt"])] = {**a, "ended_at": entry.get("ended_at")}
    except (OSError, ValueError):
        pass
    out = []
    for path in sorted(Path(work_dir, "status").glob("task-*.attempt-*.json")):
        try:
            rec = json.loads(path.read_text())
        except ValueError:
            continue
        if not rec.get("start"):
            continue
        acct = seen.get((rec.get("task"), rec.get("attempt"))) or {}
        end = rec.get("end")
        if end is None:
            if acct.get("seconds"):
                end = rec["start"] + acct["seconds"]
            elif acct.get("ended_at"):
                end = max(acct["ended_at"], rec["start"])
            else:
                continue   # still running (a run recorded while its array runs)
        out.append({**{k: rec.get(k) for k in ("task", "attempt", "host", "start", "exit", "images")}, "end": end,
                    "lost": acct.get("state") == "lost"})
    return out


def rate_cost(work_dir: Path | str, hourly_rate_usd: float) -> dict[str, Any]:
    """``existing``/``local``: task-hours (per host) × the lab's hourly rate."""
    per_host: dict[str, float] = {}
    lost = 0.0
    for t in task_intervals(work_dir):
        per_host[t["host"] or "?"] = per_host.get(t["host"] or "?", 0.0) + (t["end"] - t["start"]) / 3600
        lost += (t["end"] - t["start"]) / 3600 if t["lost"] else 0.0
    hours = sum(per_host.values())
    return {"kind": "hourly_rate", "hourly_rate_usd": hourly_rate_usd,
            "node_hours": {f"task-hours on {h}": round(v, 6) for h, v in sorted(per_host.items())},
            "lost_node_hours": round(lost, 6),   # included above: time on nodes that were lost under their tasks
            "compute_usd": round(hours * hourly_rate_usd, 6), "storage_usd": 0.0,
            "total_usd": round(hours * hourly_rate_usd, 6)}


# -- EC2: the instances of a ParallelCluster ----------------------------------------------------
_TERMINATED_AT = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")  # EC2 says GMT, moto UTC


def ec2_intervals(ec2, cluster_name: str, now: float | None = None) -> list[Interval]:
    """The cluster's instances from EC2 (``tag:parallelcluster:cluster-name``), with their lives."""
    now = now or dt.datetime.now(dt.timezone.utc).timestamp()
    out = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "tag:parallelcluster:cluster-name", "Values": [cluster_name]}])
    for page in pages:
        for res in page["Reservations"]:
            for inst in res["Instances"]:
                start = inst["LaunchTime"].timestamp()
                end = now
                if inst["State"]["Name"] in ("terminated", "stopped", "shutting-down"):
                    m = _TERMINATED_AT.search(inst.get("StateTransitionReason") or "")
                    if m:
                        end = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
                            tzinfo=dt.timezone.utc).timestamp()
                out.append(Interval(inst["InstanceType"], start, end,
                                    spot=inst.get("InstanceLifecycle") == "spot", instance_id=inst["InstanceId"]))
    return out


def spot_history(ec2, instance_types: Iterable[str], start: float, end: float) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for itype in set(instance_types):
        pages = ec2.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=[itype], ProductDescriptions=["Linux/UNIX"],
            StartTime=dt.datetime.fromtimestamp(start - 3600, dt.timezone.utc),
            EndTime=dt.datetime.fromtimestamp(end, dt.timezone.utc))
        out[itype] = [(h["Timestamp"].timestamp(), float(h["SpotPrice"])) for p in pages for h in p["SpotPriceHistory"]]
    return out


def pcluster_cost(ec2, cluster_name: str, region: str, prices: dict[str, Any], volume_gb: float,
                  now: float | None = None) -> dict[str, Any]:
    intervals = ec2_intervals(ec2, cluster_name, now)
    if not intervals:
        return {"kind": "ec2", "node_hours": {}, "compute_usd": 0.0, "storage_usd": 0.0, "total_usd": 0.0,
                "note": f"no instances tagged parallelcluster:cluster-name={cluster_name}"}
    spot_types = [iv.instance_type for iv in intervals if iv.spot]
    history = spot_history(ec2, spot_types, min(iv.start for iv in intervals),
                           max(iv.end for iv in intervals)) if spot_types else {}
    per_type = instance_costs(intervals, region, prices, history)
    life_hours = (max(iv.end for iv in intervals) - min(iv.start for iv in intervals)) / 3600
    # rounded before adding, so the breakdown in run.json and the report adds up to its total
    storage = round(ebs_cost(volume_gb, life_hours, region, prices), 6)
    compute = round(sum(r["usd"] for r in per_type.values()), 6)
    return {"kind": "ec2", "region": region, "prices_as_of": prices.get("as_of"),
            "node_hours": {k: round(v["node_hours"], 6) for k, v in per_type.items()},
            "by_instance_type": {k: {kk: round(vv, 6) for kk, vv in v.items()} for k, v in per_type.items()},
            "compute_usd": compute, "storage_usd": storage, "total_usd": round(compute + storage, 6)}


# -- estimates (budget check before a run, and the what-if planner): the arithmetic --------------
# A backend knows what it runs on (sciops.clusters: ClusterBackend.estimate_for); these price it.
#: Assumed cluster creation time when no past run says otherwise (pcluster typically 10-15 min).
DEFAULT_CREATE_SECONDS = 900
#: Compute nodes are launched when jobs arrive (Slurm power saving) and billed from launch: ~5 min to boot.
DEFAULT_BOOT_SECONDS = 300


class PlannerError(ValueError):
    """A planner question that cannot be answered as asked; the message says what to change."""


def rate_estimate(images: int, seconds_per_image: float, *, concurrent_tasks: int,
                  hourly_rate_usd: float) -> dict[str, Any]:
    """``images`` at ``seconds_per_image`` (task-seconds), ``concurrent_tasks`` at once, at a rate per task-hour."""
    task_hours = images * seconds_per_image / 3600
    duration = images * seconds_per_image / max(concurrent_tasks, 1)
    return {"concurrent_tasks": concurrent_tasks, "task_hours": round(task_hours, 4),
            "duration_s": round(duration, 1), "cost_usd": round(task_hours * hourly_rate_usd, 4)}


def nodes_estimate(images: int, seconds_per_image: float, *, nodes: int, tasks_per_node: int,
                   node_usd_per_hour: float, head_usd_per_hour: float, create_seconds: float = DEFAULT_CREATE_SECONDS,
                   boot_seconds: float = DEFAULT_BOOT_SECONDS) -> dict[str, Any]:
    """``images`` on ``nodes`` compute nodes of ``tasks_per_node`` tasks each, made for the run.

    Each node is billed for its boot and its share of the work, plus the head node for
    creation + boot + compute time.
    """
    task_hours = images * seconds_per_image / 3600
    nodes = max(nodes, 1)
    compute_s = images * seconds_per_image / (nodes * tasks_per_node)
    hours = (create_seconds + boot_seconds + compute_s) / 3600
    node_s = max(boot_seconds + compute_s, MIN_BILLED_SECONDS)  # each node: its boot, then its share
    cost = nodes * node_usd_per_hour * node_s / 3600 + head_usd_per_hour * hours
    return {"nodes": nodes, "tasks_per_node": tasks_per_node, "concurrent_tasks": nodes * tasks_per_node,
            "task_hours": round(task_hours, 4), "duration_s": round(create_seconds + boot_seconds + compute_s, 1),
            "compute_s": round(compute_s, 1), "cost_usd": round(cost, 4)}
