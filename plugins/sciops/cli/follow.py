"""``sciops run --wait``: one run followed to its end, on a progress bar.

The bar shows the phase (never going back: the run's phases come in the DAG's order), images
done/total (the input's matching images until the plan counts them), failures, ETA, spend and a
clock that ticks from the run's creation to its end. Notable turns are printed as lines of their
own, which also reach a log file or a pipe at once: the DAG is paused (the run waits for that),
Airflow cannot be reached (the api-server restarting: the command tries again with backoff for
:data:`RECONNECT_FOR` seconds and says when it is back), the run ended.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sciops.cli.api import DAG_ID, Airflow, Unreachable
from sciops.cli.settings import EXIT_AIRFLOW, Stop
from sciops.cli.terminal import shown

#: What the bar's label goes through, in order; a label earlier than the one shown never replaces it.
ORDER = ("queued", "running", "sync_up", "validate", "cluster_create", "stage_in", "plan", "run_array", "collate",
         "stage_out", "sync_down", "record", "outcome", "teardown")
PAUSED = f"paused: unpause {DAG_ID} (or ask your admin)"
#: How long an unreachable Airflow is waited for before giving up (exit 3), and the longest pause between tries.
RECONNECT_FOR, BACKOFF_FIRST, BACKOFF_MAX = 600.0, 1.0, 30.0
POLL_SECONDS = 2.0


def timestamp(value: Any) -> float | None:
    """An ISO time from Airflow's REST API as epoch seconds (None when absent or unreadable)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


class Label:
    """The bar's label: Airflow's state until a phase is known, then the latest phase in :data:`ORDER`."""

    def __init__(self):
        self.text, self.rank = "queued", 0

    def see(self, name: str | None) -> str:
        if name:
            rank = ORDER.index(name) if name in ORDER else self.rank   # an unknown phase: shown, ranked as now
            if rank >= self.rank:
                self.text, self.rank = name, rank
        return self.text


def follow(af: Airflow, run_id: str, sleep: Callable[[float], None] = time.sleep) -> str:
    """Follow ``run_id`` until it ends; its final state (``success`` or ``failed``)."""
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
    from rich.text import Text

    class Clock(ProgressColumn):
        """Time since the run was created, to its end: ticks between polls, stops only when the run does."""

        def render(self, task) -> Text:
            since, until = task.fields.get("since"), task.fields.get("until")
            return Text(clock((until or time.time()) - since) if since else "-:--:--", style="progress.elapsed")

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
               TextColumn("{task.fields[extra]}"), Clock())
    label, started = Label(), time.time()
    with Progress(*columns, transient=False) as bar:
        def say(line: str) -> None:   # whole lines (never wrapped), no Rich markup read in a name
            bar.console.print(line, soft_wrap=True, markup=False, highlight=False)

        job = bar.add_task("queued", total=None, count="", extra="", since=started, until=None)
        down_since: float | None = None
        delay, was_paused = BACKOFF_FIRST, False
        while True:
            try:
                dr = af.run(run_id)
                p = af.progress(run_id) or {}
                paused = dr.get("state") == "queued" and af.paused()
            except Unreachable as exc:
                now = time.time()
                if down_since is None:
                    down_since = now
                    say(shown(f"{exc}: trying again (backoff up to {BACKOFF_MAX:.0f} s); the run goes on"))
                if now - down_since > RECONNECT_FOR:
                    raise Stop(f"{exc} for {now - down_since:.0f} s; the run may still be going: "
                               f"sciops status (run {run_id})", EXIT_AIRFLOW) from None
                sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if down_since is not None:
                say(f"Airflow is back after {time.time() - down_since:.0f} s: following the run again")
                down_since, delay = None, BACKOFF_FIRST
            if paused != was_paused:
                say(PAUSED if paused else f"{DAG_ID} unpaused: the run goes on")
                was_paused = paused
            state = dr.get("state") or "queued"
            since = timestamp(dr.get("queued_at")) or timestamp(dr.get("start_date")) or started
            total, done = p.get("images"), p.get("done") or 0
            extra = ", ".join(x for x in (f"{p['failed']} failed" if p.get("failed") else "",
                                          f"ETA {p['eta_s']:.0f} s" if p.get("eta_s") else "",
                                          f"spent {p['spent_usd']:.2f} USD" if p.get("spent_usd") else "") if x)
            ended = state in ("success", "failed")
            text = state if ended else "paused" if paused else label.see(p.get("phase") or state)
            bar.update(job, description=shown(text), total=total or None, completed=done,
                       count=f"{done}/{total} images" if total else f"{done}/? images", extra=extra, since=since,
                       until=(timestamp(dr.get("end_date")) or time.time()) if ended else None)
            if ended:
                return state
            sleep(POLL_SECONDS)
