"""Scoring a nucleus segmentation against ground truth, and choosing defaults without the set scored.

Pure numpy, no ImageJ: ``bench/bench_accuracy.py`` runs the macros and feeds these.

* :func:`match`: two label images -> matches at IoU >= 0.5 (one-to-one), splits, merges;
* :func:`summarise`: a set's images -> count error (mean absolute relative error per image), pooled object
  precision / recall / F1, splits and merges, seconds per image;
* :func:`leave_one_set_out`: the candidate settings' scores per set -> for each set the candidate chosen without it
  (held-out) and the one chosen on all sets (in-sample).
"""
from __future__ import annotations

import statistics

import numpy as np

IOU = 0.5

def match(truth: np.ndarray, pred: np.ndarray, iou: float = IOU) -> dict[str, int]:
    """Object-level comparison of two label images (0 = background): matches at IoU >= ``iou``, splits, merges."""
    g = truth.astype(np.int64).ravel()
    p = pred.astype(np.int64).ravel()
    # relabel to 0..n so a label image with gaps costs nothing
    g = np.unique(g, return_inverse=True)[1] if g.any() else g
    p = np.unique(p, return_inverse=True)[1] if p.any() else p
    if truth.min() > 0:
        g = g + 1
    if pred.min() > 0:
        p = p + 1
    ng, npred = int(g.max()), int(p.max())
    ct = np.bincount(g * (npred + 1) + p, minlength=(ng + 1) * (npred + 1)).reshape(ng + 1, npred + 1)
    area_g, area_p = ct.sum(1)[1:], ct.sum(0)[1:]
    inter = ct[1:, 1:].astype(float)
    union = area_g[:, None] + area_p[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        ious = np.where(union > 0, inter / union, 0.0)
    hit = ious >= iou
    # IoU >= 0.5 pairs are one-to-one except at exactly 0.5: keep the best per object
    tp = min(int(hit.any(1).sum()), int(hit.any(0).sum()))
    inside_g = inter >= 0.5 * area_p[None, :]      # predicted object j lies mostly inside nucleus i
    holds_g = inter >= 0.5 * area_g[:, None]       # nucleus i lies mostly inside predicted object j
    return {"truth": ng, "pred": npred, "tp": tp, "fp": npred - tp, "fn": ng - tp,
            "splits": int((inside_g.sum(1) >= 2).sum()), "merges": int((holds_g.sum(0) >= 2).sum())}


def summarise(per_image: dict[str, dict]) -> dict:
    """A set's figures from its images' records (``count``, ``truth``, and for label sets ``objects``)."""
    done = {k: v for k, v in per_image.items() if v.get("count") is not None}
    errs = [abs(v["count"] - v["truth"]) / v["truth"] for v in done.values() if v["truth"]]
    out = {"images": len(per_image), "images_counted": len(done),
           "count_error": round(statistics.mean(errs), 4) if errs else None,
           "count_bias": round(statistics.mean((v["count"] - v["truth"]) / v["truth"] for v in done.values()
                                               if v["truth"]), 4) if errs else None,
           "seconds_per_image": round(statistics.median(v["seconds"] for v in done.values()), 3) if done else None}
    objs = [v["objects"] for v in done.values() if v.get("objects")]
    if objs:
        tot = {k: sum(o[k] for o in objs) for k in objs[0]}
        prec = tot["tp"] / tot["pred"] if tot["pred"] else 0.0
        rec = tot["tp"] / tot["truth"] if tot["truth"] else 0.0
        out.update({"precision": round(prec, 4), "recall": round(rec, 4),
                    "f1": round(2 * prec * rec / (prec + rec), 4) if prec + rec else 0.0,
                    "splits": tot["splits"], "merges": tot["merges"], "objects_truth": tot["truth"],
                    "objects_pred": tot["pred"]})
    if len(done) < len(per_image):   # a failed image counts as the worst answer, never silently dropped
        out["count_error"] = None if out["count_error"] is None else round(
            (out["count_error"] * len(done) + (len(per_image) - len(done))) / len(per_image), 4)
    return out


def objective(s: dict) -> float:
    """What the defaults are chosen by on one set: count error, plus 1 - F1 where labels exist."""
    ce = s["count_error"] if s["count_error"] is not None else 1.0
    return ce + (1 - s["f1"] if "f1" in s else 0.0)


def leave_one_set_out(scores: dict[str, dict[str, dict]]) -> dict:
    """``scores[candidate][set]`` -> per set: the candidate chosen without it (held-out) and with all (in-sample)."""
    cands = list(scores)
    sets = list(next(iter(scores.values())))

    def best(among: list[str]) -> str:
        return min(cands, key=lambda c: (statistics.mean(objective(scores[c][s]) for s in among), cands.index(c)))

    chosen_all = best(sets)
    out = {"chosen_on_all_sets": chosen_all, "sets": {}}
    for s in sets:
        c = best([x for x in sets if x != s]) if len(sets) > 1 else chosen_all
        out["sets"][s] = {"held_out_choice": c, "held_out": scores[c][s], "in_sample": scores[chosen_all][s]}
    return out
