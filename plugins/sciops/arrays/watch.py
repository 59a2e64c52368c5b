"""The array watch as one pure step: the scheduler's answers in, the next actions out (sans-I/O).

One attempt of an array job is watched by :class:`Watch`. It never runs a command, reads a
file or sleeps: it says what to do next (:class:`Action`) and is fed what came back. Two
small loops drive it, so that both ways of waiting obey the same rules (budget cap,
deadline, stuck tasks, accounting lag):

* :func:`drive` — the worker's loop (``ArrayRun.wait``: the first seconds of every attempt,
  and ``deferrable=False``);
* ``ArrayJobTrigger._watch`` — the triggerer's asyncio loop (file reads in threads,
  connection errors retried there).

The rules, in the order a status answer meets them:

1. past ``deadline`` (the run's one timeout, carried across deferrals): cancel, end ``timeout``;
2. the spend grows by running tasks × task rate + the fixed rate since the last answer; when
   the spend plus what the same rate costs until the next answer and the job's stop
   (``poll_seconds`` + :data:`STOP_SECONDS`) would pass ``budget_usd``: cancel now, end
   ``budget_exceeded``. The cap holds on the recorded cost (the tasks' own start/end), not
   only on this estimate, unless more tasks start in that window than run now;
3. tasks still queued or running: sleep ``poll_seconds``. In the last wave (at most
   :data:`WAKE_MAX_TASKS` not ended, queued ones included: on the local backend a queued task may
   be one a running runner has chained, whose own runner exits at once when it starts) the
   sleep names them (``wake``): a loop that can read the runners' exit files looks at those few
   every :data:`WAKE_SECONDS` and asks the status again as soon as all of them wrote one, so the
   array's end is seen within about half a second, not up to a whole poll later;
4. every task out of the queue: tasks stuck in an error state (SGE ``Eqw``) get the job
   cancelled once; then the runners' exit files, then accounting, which lags the queue: ask
   again every ``ACCOUNTING_RETRY_SECONDS`` until every task has a record, or until
   ``grace_seconds`` after the queue emptied, when the missing ones get the scheduler's
   ``missing_record`` verdict.

A failed status query is fed as ``None`` ("don't know yet": never "done").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from sciops.arrays.schedulers.base import JobState, TaskAccounting

#: How long a task may be out of the queue but missing from accounting before we give up
#: on it: accounting lags the queue (Grid Engine flushes every 15 s by default, Slurm's
#: sacct lags squeue by seconds), and giving up too early would misreport a finished task.
ACCOUNTING_GRACE_SECONDS = 120.0
#: Once the queue is empty, how soon to ask accounting again.
ACCOUNTING_RETRY_SECONDS = 0.5

#: In the last wave, how often a loop that can read the runners' exit files looks at them during a sleep.
WAKE_SECONDS = 0.5
#: The most running tasks a last-wave sleep names for waking (one small file read each per look).
WAKE_MAX_TASKS = 64

#: How long a cancelled job's tasks may still run (and cost) after the cancel: the runner's cleanup
#: after qdel's SIGUSR2 or scancel's SIGTERM takes about a second; this leaves room for a busy head node.
STOP_SECONDS = 5.0

STATUS, EXIT_FILES, ACCOUNTING, CANCEL, SLEEP, END = "status", "exit_files", "accounting", "cancel", "sleep", "end"


@dataclass(frozen=True)
class Action:
    """What the loop must do: run the status/accounting command, read exit files, cancel, sleep, or end.

    :param kind: one of ``status``, ``exit_files``, ``accounting``, ``cancel``, ``sleep``, ``end``.
    :param seconds: for ``sleep``.
    :param event: for ``end``: the watch's one result (JSON).
    :param reason: for ``cancel``: why (logged).
    :param wake: for ``sleep``: tasks whose exit files, once all of them are written, end the sleep early
        (empty: sleep the whole time).
    """

    kind: str
    seconds: float = 0.0
    event: dict[str, Any] | None = None
    reason: str = ""
    wake: tuple[int, ...] = ()


def ended(states: dict[int, JobState]) -> bool:
    """Every task is out of the queue (finished or unknown) or stuck in an error state."""
    return all(s.finished or s in (JobState.UNKNOWN, JobState.ERROR) for s in states.values())


def complete_accounting(missing_record: tuple[JobState, str], acct: dict[int, TaskAccounting], task_ids: list[int],
                        errored: list[int], give_up: bool) -> dict[int, TaskAccounting] | None:
    """Accounting for every task, or None to ask again (accounting lags the queue).

    ``errored`` tasks sat in an error state (SGE ``Eqw``) and were deleted by us; after
    ``give_up``, tasks still without a record get the scheduler's ``missing_record`` verdict.
    """
    missing = [t for t in task_ids if t not in acct or not acct[t].state.finished]
    if any(t not in errored for t in missing) and not give_up:
        return None   # a deleted Eqw task never gets a record: no need to wait for it
    acct = dict(acct)
    state_, reason = missing_record
    for t in missing:
        if t in errored:
            acct[t] = TaskAccounting(t, JobState.FAILED, reason="stuck in an error state (SGE Eqw: is the log "
                                                                "folder writable on the nodes?); deleted")
        else:
            acct[t] = TaskAccounting(t, state_, reason=reason)
    return acct


def acct_dict(a: TaskAccounting) -> dict[str, Any]:
    return {"state": a.state.value, "exit_code": a.exit_code, "seconds": a.seconds, "max_rss_mb": a.max_rss_mb,
            "reason": a.reason}


@dataclass
class Watch:
    """The watch of one attempt (see the module docstring for its rules).

    :param job_id: the scheduler's job id.
    :param task_ids: the chunks this job runs.
    :param missing_record: the scheduler's verdict for a task with no accounting record.
    :param poll_seconds: seconds between status polls while tasks queue or run.
    :param grace_seconds: how long accounting may lag the queue.
    :param budget: ``{"budget_usd", "spent_usd", "task_rate_usd_per_hour", "fixed_rate_usd_per_hour"}``
        (``since``: the time from which spend is not counted yet), or None.
    :param deadline: ``time.time()`` past which the job is cancelled (None: no limit).
    :param now: when the watch starts (the spend is counted from here, or from ``budget["since"]``).
    """

    job_id: str
    task_ids: list[int]
    missing_record: tuple[JobState, str]
    poll_seconds: float = 5.0
    grace_seconds: float = ACCOUNTING_GRACE_SECONDS
    budget: dict[str, float] | None = None
    deadline: float | None = None
    now: float = field(default_factory=time.time)
    states: dict[int, JobState] = field(default_factory=dict)
    queue_empty_since: float | None = None
    errored: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.budget = dict(self.budget) if self.budget and self.budget.get("budget_usd") else None
        self.last_poll = float(self.budget.get("since") or self.now) if self.budget else self.now
        self.states = {t: JobState.UNKNOWN for t in self.task_ids}

    @property
    def spent_usd(self) -> float | None:
        return self.budget["spent_usd"] if self.budget else None

    def start(self) -> list[Action]:
        return [Action(STATUS)]

    def on_status(self, states: dict[int, JobState] | None, now: float) -> list[Action]:
        """The status command's answer (None: it failed, so nothing is known)."""
        self.states = states if states is not None else {t: JobState.UNKNOWN for t in self.task_ids}
        if self.deadline is not None and now > self.deadline:
            return [Action(CANCEL, reason="the run's timeout passed"),
                    Action(END, event={"status": "timeout", "job_id": self.job_id, "deadline": self.deadline,
                                       "spent_usd": self.spent_usd})]
        crossed = self._spend(now)
        if crossed:
            return crossed
        if not ended(self.states):
            self.queue_empty_since = None
            return [Action(SLEEP, seconds=self.poll_seconds, wake=self._last_wave())]
        self.queue_empty_since = self.queue_empty_since or now
        stuck = [t for t, s in self.states.items() if s == JobState.ERROR]
        if stuck and not self.errored:
            self.errored = stuck
            return [Action(CANCEL, reason=f"tasks {stuck} stuck in an error state"), Action(ACCOUNTING)]
        return [Action(ACCOUNTING)] if self.errored else [Action(EXIT_FILES)]

    def on_exit_files(self, acct: dict[int, TaskAccounting] | None, now: float) -> list[Action]:
        """Completion from the runners' exit files (None: not every task wrote exit 0)."""
        if acct is not None and not self.errored:
            return [self._end(acct)]
        return [Action(ACCOUNTING)]

    def on_accounting(self, acct: dict[int, TaskAccounting] | None, now: float) -> list[Action]:
        """The accounting command's records (None or {}: none yet, or the query failed)."""
        since = self.queue_empty_since if self.queue_empty_since is not None else now
        done = complete_accounting(self.missing_record, acct or {}, self.task_ids, self.errored,
                                   give_up=now - since > self.grace_seconds)
        if done is not None:
            return [self._end(done)]
        # accounting usually lands within a second of the queue emptying: ask again soon
        return [Action(SLEEP, seconds=min(self.poll_seconds, ACCOUNTING_RETRY_SECONDS))]

    def _last_wave(self) -> tuple[int, ...]:
        """The tasks not ended when they are few (what a sleep may wake on: all of them wrote an exit file), else ()."""
        left = tuple(t for t, s in self.states.items() if not s.finished)
        return left if len(left) <= WAKE_MAX_TASKS else ()

    def _spend(self, now: float) -> list[Action] | None:
        if self.budget is None:
            return None
        running = sum(1 for s in self.states.values() if s == JobState.RUNNING)
        rate = running * self.budget.get("task_rate_usd_per_hour", 0.0) + self.budget.get("fixed_rate_usd_per_hour",
                                                                                         0.0)
        self.budget["spent_usd"] += rate * max(now - self.last_poll, 0.0) / 3600
        self.last_poll = now
        projected = self.budget["spent_usd"] + rate * (self.poll_seconds + STOP_SECONDS) / 3600
        if projected <= self.budget["budget_usd"]:
            return None
        event = {"status": "budget_exceeded", "job_id": self.job_id, "spent_usd": round(self.budget["spent_usd"], 6),
                 "projected_usd": round(projected, 6), "budget_usd": self.budget["budget_usd"], "cancelled_at": now,
                 "poll_seconds": self.poll_seconds, "stop_seconds": STOP_SECONDS, "running_tasks": running,
                 "rate_usd_per_hour": rate}
        return [Action(CANCEL, reason=f"budget: {self.budget['spent_usd']:.4f} USD spent, {projected:.4f} USD by the "
                                      f"next check at {rate:.2f} USD/h, of {self.budget['budget_usd']:.4f} USD"),
                Action(END, event=event)]

    def _end(self, acct: dict[int, TaskAccounting]) -> Action:
        return Action(END, event={"status": "ended", "job_id": self.job_id, "spent_usd": self.spent_usd,
                                  "accounting": {str(t): acct_dict(a) for t, a in acct.items()}})


def drive(watch: Watch, *, status: Callable[[], dict[int, JobState] | None],
          exit_files: Callable[[], dict[int, TaskAccounting] | None],
          accounting: Callable[[], dict[int, TaskAccounting] | None], cancel: Callable[[str], None],
          progress: Callable[[dict[int, JobState]], None] = lambda states: None,
          stop_at: float | None = None, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep,
          exited: Callable[[tuple[int, ...]], bool] | None = None) -> dict[str, Any] | None:
    """The worker's loop: run ``watch`` to its end event, or return None when ``stop_at`` comes first.

    The callables do the I/O (each answers None when it cannot tell); ``cancel`` gets the reason;
    ``exited(tasks)``, when the exit files can be read from here, says whether all of ``tasks`` wrote one.
    """
    actions = watch.start()
    while True:
        ask = STATUS
        for action in actions:
            if action.kind == END:
                return action.event
            if action.kind == CANCEL:
                cancel(action.reason)
            elif action.kind == SLEEP:
                if stop_at is not None and clock() + action.seconds > stop_at:
                    # the window ends first: in the last wave, wait for the exit files until it does
                    if not (action.wake and exited and nap(action, sleep, clock, exited, until=stop_at)):
                        return None
                else:
                    nap(action, sleep, clock, exited)
            else:
                ask = action.kind
        if ask == STATUS:
            actions = watch.on_status(status(), clock())
            progress(watch.states)
        elif ask == EXIT_FILES:
            actions = watch.on_exit_files(exit_files(), clock())
        else:
            actions = watch.on_accounting(accounting(), clock())


def nap(action: Action, sleep: Callable[[float], None], clock: Callable[[], float],
        exited: Callable[[tuple[int, ...]], bool] | None, until: float | None = None) -> bool:
    """Sleep for ``action`` (or to ``until``, if sooner): the whole time, or in :data:`WAKE_SECONDS` steps until
    its ``wake`` tasks all exited. True when they did."""
    if not action.wake or exited is None:
        sleep(action.seconds)
        return False
    end = clock() + action.seconds if until is None else min(until, clock() + action.seconds)
    while (left := end - clock()) > 0:
        sleep(min(WAKE_SECONDS, left))
        if exited(action.wake):
            return True
    return False
