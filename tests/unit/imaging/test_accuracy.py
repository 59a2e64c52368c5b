"""Scoring a segmentation against ground truth (bench_accuracy's figures) and the leave-one-set-out choice."""
from __future__ import annotations

import numpy as np
import pytest
from sciops.imaging.accuracy import leave_one_set_out, match, objective, summarise


def disks(shape, centres, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    out = np.zeros(shape, np.uint16)
    for i, (cy, cx) in enumerate(centres, 1):
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return out


def test_identical_label_images_match_every_object_whatever_the_label_values():
    truth = disks((64, 64), [(16, 16), (16, 48), (48, 32)], 6)
    relabelled = np.where(truth > 0, truth * 7 + 100, 0)
    assert match(truth, relabelled) == {"truth": 3, "pred": 3, "tp": 3, "fp": 0, "fn": 0, "splits": 0, "merges": 0}


def test_a_merge_a_split_a_miss_and_a_false_object_are_each_counted():
    truth = disks((80, 80), [(20, 12), (20, 24), (20, 36), (60, 60), (60, 20)], 5)
    pred = np.zeros_like(truth)
    pred[(truth >= 1) & (truth <= 3)] = 1                   # three neighbours as one object: a merge
    left = (truth == 4) & (np.arange(80)[None, :] < 58)
    pred[left] = 2                                          # nucleus 4 cut in two: a split (its larger part
    pred[(truth == 4) & ~left] = 3                          # still overlaps it at IoU >= 0.5: one match)
    pred[5:9, 70:74] = 4                                    # debris: a false object; nucleus 5 missed
    assert match(truth, pred) == {"truth": 5, "pred": 4, "tp": 1, "fp": 3, "fn": 4, "splits": 1, "merges": 1}


def test_iou_at_least_a_half_is_a_match():
    truth = np.zeros((10, 10), np.uint8)
    truth[0:4, 0:4] = 1                                     # 16 px
    pred = np.zeros_like(truth)
    pred[0:4, 0:2] = 1                                      # 8 px inside: IoU 0.5
    assert match(truth, pred)["tp"] == 1
    pred[0:4, 0:1] = 0                                      # 4 px: IoU 0.25
    assert match(truth, pred)["tp"] == 0


def test_a_set_summary_pools_objects_and_a_failed_image_counts_as_the_worst_answer():
    objs = {"truth": 10, "pred": 8, "tp": 8, "fp": 0, "fn": 2, "splits": 0, "merges": 1}
    per = {"a": {"count": 8, "truth": 10, "seconds": 1.0, "objects": objs},
           "b": {"count": 12, "truth": 10, "seconds": 3.0, "objects": {**objs, "pred": 12, "fp": 4}}}
    s = summarise(per)
    assert (s["count_error"], s["count_bias"], s["seconds_per_image"]) == (0.2, 0.0, 2.0)
    assert (s["precision"], s["recall"], s["objects_truth"], s["merges"]) == (0.8, 0.8, 20, 2)
    assert s["f1"] == pytest.approx(0.8)
    per["c"] = {"count": None, "truth": 10, "seconds": None}
    assert summarise(per)["count_error"] == pytest.approx((0.2 * 2 + 1) / 3, abs=1e-4)


def test_leave_one_set_out_scores_each_set_with_the_candidate_chosen_without_it():
    def sc(e):
        return {"count_error": e, "f1": 1.0}
    scores = {"a": {"s1": sc(0.05), "s2": sc(0.05), "s3": sc(0.30)},
              "b": {"s1": sc(0.10), "s2": sc(0.20), "s3": sc(0.20)},
              "c": {"s1": sc(0.60), "s2": sc(0.01), "s3": sc(0.01)}}
    got = leave_one_set_out(scores)
    assert got["chosen_on_all_sets"] == "a"                              # means 0.133, 0.167, 0.207
    s1, s3 = got["sets"]["s1"], got["sets"]["s3"]
    assert s3["held_out_choice"] == "a" and s3["held_out"]["count_error"] == 0.30   # c's 0.01 is not offered
    assert s1["held_out_choice"] == "c" and s1["held_out"]["count_error"] == 0.60   # chosen on s2 and s3 alone
    assert s1["in_sample"]["count_error"] == 0.05
    assert objective({"count_error": None}) == 1.0 and objective({"count_error": 0.1, "f1": 0.9}) == pytest.approx(0.2)
