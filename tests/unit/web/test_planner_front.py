"""The planner's answer (issue 37, item 4): the Pareto front, the lab's own cluster, deadlines in minutes."""
from __future__ import annotations

import re

import pytest
from sciops.web import pages, planner


def _opt(kind, nodes, hours, usd):
    return {"label": kind, "instance_type": kind, "nodes": nodes, "concurrent_tasks": nodes,
            "duration_s": hours * 3600, "cost_usd": usd, "meets_deadline": None}


def test_the_front_keeps_only_options_no_other_beats_on_both():
    a, b, c, d, e = (_opt("a", 1, 4.0, 1.0), _opt("b", 2, 2.0, 2.0), _opt("c", 4, 1.0, 4.0),
                     _opt("d", 2, 3.0, 3.0),    # slower and dearer than b
                     _opt("e", 8, 1.0, 5.0))    # as fast as c, dearer
    assert planner.pareto([d, e, c, b, a]) == [c, b, a]
    assert planner.pareto([a]) == [a]


def test_the_own_cluster_is_planned_from_its_slots_and_rate():
    out = planner.tradeoff(10_000, 2.0, 90 / 60, "us-east-1", "c5.xlarge,m5.2xlarge", "1,2,4,8", 2048,
                           slots=40, task_hour_usd=0.02)
    own = next(o for o in out["options"] if o.get("own"))
    # 10,000 images × 2 task-seconds over 40 slots; 5.56 task-hours at 0.02 USD
    assert own["duration_s"] == pytest.approx(500, abs=1) and own["cost_usd"] == pytest.approx(0.1111, abs=1e-3)
    assert own["instance_type"] == "own cluster (40 slots)" and own["meets_deadline"] is True
    assert out["best"]["instance_type"] == "own cluster (40 slots)"   # cheapest, and within 90 minutes
    front = out["front"]
    assert own in front and len(front) < len(out["options"]) == 9
    for o in front:   # nothing beats a front option on both
        assert not any(x["duration_s"] <= o["duration_s"] and x["cost_usd"] < o["cost_usd"]
                       or x["duration_s"] < o["duration_s"] and x["cost_usd"] <= o["cost_usd"]
                       for x in out["options"])


def test_the_page_answers_with_the_front_and_a_deadline_in_minutes(monkeypatch):
    monkeypatch.setattr(pages.planner, "past", lambda macro, project, readable: {"runs": 2, "seconds_per_image": 2.2})
    s = {"cost_per_image_by_macro": {"count": {}}, "per_run": []}
    q = {"plan": "1", "macro": "count", "images": "10000", "deadline_min": "45", "instance_types": "",
         "nodes": "1,2,4,8,16,32", "slots": "16", "task_hour_usd": "0.05"}
    answer = pages.planner_form(s, q, set())["answer"]
    assert answer is not None and 0 < len(answer["front"]) <= 15 < len(answer["options"])
    assert any(o["instance_type"] == "own cluster (16 slots)" for o in answer["options"])
    chart = str(answer["chart"])
    assert "deadline 45 min" in chart
    # one legend entry per front option, each its own colour
    fills = re.findall(r'fill: (#[0-9a-f]{6})', chart)
    assert len(set(fills)) >= len(answer["front"]), fills
