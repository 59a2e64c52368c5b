"""The nightly batch: which projects have images their macro has not processed, and one run for each.

``fiji_nightly`` (dags/fiji_nightly.py) calls :func:`scan` over every project under the storage
root. A project takes part when its ``project.yaml`` says ``nightly: true``; it gets a
``fiji_project`` run with ``only_new`` when some image matching its ``file_pattern`` has not
been processed by its macro with its ``macro_args`` (see :mod:`sciops.run.processed`: a changed
macro, new arguments or a rewritten image make images new again). A project whose settings or
files are wrong is reported (the task log, and one Slack message for all of them) and does not
stop the others. Each project costs one listing of its files and a read of its index, never a
request per image.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sciops.errors import ConfigError
from sciops.phases.checks import check_project
from sciops.reporting import notify
from sciops.run import choices, processed
from sciops.run.project import macro_sha256
from sciops.run.runinfo import storage_for

log = logging.getLogger(__name__)
RUN, SKIP, INVALID = "run", "skip", "invalid"


@dataclass
class Decision:
    project: str
    action: str            # run | skip | invalid
    reason: str
    images: int = 0        # matching file_pattern
    new: int = 0           # of them, not processed by this macro as they are now


def decide(storage, name: str) -> Decision:
    """One project: run (with how many new images), skip (and why), or invalid (and the fix)."""
    try:
        if not opted_in(storage, name):
            return Decision(name, SKIP, "not in the nightly batch (project.yaml has no 'nightly: true')")
        cfg, project, images, macro, listing, defaults, ids = check_project({"project": name}, storage)
    except ConfigError as exc:
        if exc.fields == ["file_pattern"]:   # no image yet: not broken, just nothing to do
            return Decision(name, SKIP, "no image matches file_pattern yet")
        return Decision(name, INVALID, str(exc).replace("\n", " "))
    done = processed.read(storage, name, processed.key(macro_sha256(macro), cfg.macro_args))
    new = processed.new_images(images, ids, done)
    if not new:
        return Decision(name, SKIP, f"nothing new: all {len(images)} image(s) processed by macro {cfg.macro} "
                                    "as they are", len(images))
    return Decision(name, RUN, f"{len(new)} of {len(images)} image(s) new or changed for macro {cfg.macro}",
                    len(images), len(new))


def opted_in(storage, name: str) -> bool:
    """Does the project's ``project.yaml`` say ``nightly: true``? (one small read; ConfigError if it is not YAML)"""
    from sciops.run.bounded import MAX_YAML_BYTES, load_yaml

    if not storage.exists(name, "project.yaml"):
        return False
    # the same bounds as validate's (sciops.run.bounded): one project's alias bomb must not hang the scan of all
    data = load_yaml(storage.read_bytes(name, "project.yaml")[:MAX_YAML_BYTES + 1], "project.yaml")
    return isinstance(data, dict) and data.get("nightly") is True


def scan(storage=None) -> list[Decision]:
    """Every project under the storage root, decided; one that cannot be read is ``invalid``, never fatal."""
    storage = storage or storage_for({})
    decisions = []
    for name in storage.projects():
        try:
            decision = decide(storage, name)
        except Exception as exc:  # noqa: BLE001 - one broken project must not stop the others
            decision = Decision(name, INVALID, f"{type(exc).__name__}: {exc}"[:500])
        log.log(logging.ERROR if decision.action == INVALID else logging.INFO, "%s: %s (%s)", name,
                decision.action, decision.reason)
        decisions.append(decision)
    choices.refresh(storage)   # the trigger form's list of projects and macros (an S3 root's cache file)
    return decisions


def report(decisions: list[Decision]) -> None:
    """Projects that could not be considered, in one Slack message (``SCIOPS_SLACK_CONN_ID`` / sciops_slack)."""
    bad = [d for d in decisions if d.action == INVALID]
    runs = [d for d in decisions if d.action == RUN]
    log.info("nightly: %d project(s) to run, %d skipped, %d invalid", len(runs),
             sum(d.action == SKIP for d in decisions), len(bad))
    if bad:
        notify.send(":warning: SciOps nightly: " + f"{len(bad)} project(s) not run, fix and they join tomorrow:\n"
                    + "\n".join(f"• *{d.project}*: {d.reason[:400]}" for d in bad))


def run_confs(decisions: list[Decision]) -> list[dict[str, Any]]:
    """The ``fiji_project`` conf of each project to run: its own settings, over its new images only."""
    return [{"project": d.project, "only_new": True} for d in decisions if d.action == RUN]
