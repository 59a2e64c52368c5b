"""Charts as inline SVG, drawn with matplotlib on the server: report.html and the dashboard.

matplotlib does what hand-drawn SVG got wrong (repeating ticks such as "0 s 1 s 1 s 2 s",
no dates on time axes, a "1 USD" axis when everything cost 0): its locators choose the
ticks, its date formatters the labels. The pages stay self-contained (no script, font or
network fetch); text stays text (``svg.fonttype: none``), so a browser test can read the
tick labels. Each chart's ``<svg>`` carries ``id``, ``class="chart"`` and ``data-marks``
(how many things it drew).
"""
from __future__ import annotations

import datetime as dt
import html
import io
from typing import Any, Iterable

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
FAILED = "#d62728"


def _figure(width_px: int, height_px: int, layout: str | None = "constrained"):
    """A figure of one axes. ``layout=None``: the caller places the axes with :func:`_fit` before saving."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / 100, height_px / 100), dpi=100, layout=layout)
    return fig, fig.add_subplot()


#: Around the axes, in points: what constrained layout leaves (3/72 in, each side) plus a little.
_PAD = 4.0


def _fit(fig, ax) -> None:
    """Margins around ``ax`` from its tick labels and axis labels as measured, set before the one draw.

    What constrained layout does, without its extra pass: it draws the figure once to measure it and
    again to save it, about half of a chart's cost (report.render of the demo: 1.2 s of CPU with it,
    0.6 s without). A chart with a legend outside the axes or a colour bar keeps constrained layout.
    """
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    def size(text) -> tuple[float, float]:   # points: width, height (ascent + descent) of one label
        s = text.get_text()
        if not s:
            return 0.0, 0.0
        w, h, _ = text_to_path.get_text_width_height_descent(s, FontProperties(size=text.get_fontsize()),
                                                              ismath=False)
        return w, h

    def ticks(axis) -> tuple[float, float, float]:   # widest label, tallest, and tick length + pad
        labels = [size(t) for t in axis.get_majorticklabels()]
        tick = axis.get_major_ticks()[0] if axis.get_major_ticks() else None
        out = (tick.get_tick_padding() + tick.get_pad()) if tick is not None else 7.0
        return max((w for w, _ in labels), default=0.0), max((h for _, h in labels), default=0.0), out

    def label(axis) -> float:   # the axis label's height and its pad (0 without one)
        w, h = size(axis.label)
        return h + axis.labelpad if h else 0.0

    yw, yh, yout = ticks(ax.yaxis)
    xw, xh, xout = ticks(ax.xaxis)
    width, height = (v * 72 for v in fig.get_size_inches())   # points
    left = _PAD + label(ax.yaxis) + yw + yout
    bottom = _PAD + label(ax.xaxis) + xh + xout
    right = _PAD + xw / 2   # the last x tick label is centred on the axes' right edge
    top = _PAD + yh / 2 + (size(ax.yaxis.get_offset_text())[1] if ax.yaxis.get_offset_text().get_text() else 0.0)
    fig.subplots_adjust(left=min(left / width, 0.45), right=max(1 - right / width, 0.55),
                        bottom=min(bottom / height, 0.6), top=max(1 - top / height, 0.65))


def to_svg(fig, element_id: str, marks: int, label: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog) with the attributes the pages and tests use."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": element_id}):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return text.replace("<svg", f'<svg id="{element_id}" class="chart" data-marks="{marks}" role="img" '
                                f'aria-label="{html.escape(label, quote=True)}"', 1)


SERIES_DOTS_MAX = 400


def time_series(points: Iterable[tuple[float, float]], ylabel: str, element_id: str,
                width: int = 860, height: int = 240) -> str:
    """Values over wall-clock time (epoch seconds → dates on the axis), one dot per run; past
    :data:`SERIES_DOTS_MAX` runs a thin line without dots (each dot is an SVG element of its own)."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    points = sorted(points)
    fig, ax = _figure(width, height)
    xs = [dt.datetime.fromtimestamp(t, dt.timezone.utc) for t, _ in points]
    ys = [v for _, v in points]
    if len(points) <= SERIES_DOTS_MAX:
        ax.plot(xs, ys, marker="o", markersize=4, color=PALETTE[0], linewidth=1)
    else:
        ax.plot(xs, ys, color=PALETTE[0], linewidth=0.6)
    if xs and (xs[-1] - xs[0]) < dt.timedelta(hours=1):   # one run (or a burst): hours around it, not 2025-2029
        ax.set_xlim(xs[0] - dt.timedelta(hours=3), xs[-1] + dt.timedelta(hours=3))
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("run started (UTC)")
    ax.grid(alpha=0.3)
    return to_svg(fig, element_id, len(points), ylabel)


def timeline(tasks: list[dict[str, Any]], element_id: str = "timeline", width: int = 900) -> str:
    """Array task attempts per node over the run's seconds; overlapping tasks on a node get their own lane."""
    t0 = min(t["start"] for t in tasks)
    lanes: list[tuple[str, list[dict[str, Any]]]] = []
    for host in sorted({t["host"] or "?" for t in tasks}):
        host_lanes: list[list[dict[str, Any]]] = []
        for t in sorted((t for t in tasks if (t["host"] or "?") == host), key=lambda t: t["start"]):
            lane = next((ln for ln in host_lanes if ln[-1]["end"] <= t["start"]), None)
            if lane is None:
                host_lanes.append([t])
            else:
                lane.append(t)
        # every row labelled: a node running tasks at once gets a row per slot ("-" was all a second row read)
        lanes += [(host if len(host_lanes) == 1 else f"{host[:18]}, slot {i + 1}", lane)
                  for i, lane in enumerate(host_lanes)]
    fig, ax = _figure(width, 70 + 22 * len(lanes), layout=None)
    for y, (_, lane) in enumerate(lanes):
        colors = [PALETTE[((t.get("attempt") or 1) - 1) % len(PALETTE)] if t.get("exit") == 0 else FAILED
                  for t in lane]
        ax.broken_barh([(t["start"] - t0, max(t["end"] - t["start"], 1e-3)) for t in lane], (y - 0.4, 0.8),
                       facecolors=colors)
    ax.set_yticks(range(len(lanes)), [name[:24] for name, _ in lanes])
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the first task started (a row per task running at once on a node; "
                  "colour: attempt; red: failed)")
    ax.grid(axis="x", alpha=0.3)
    _fit(fig, ax)
    return to_svg(fig, element_id, len(tasks), "Array tasks per node")


BETWEEN = "#b0b0b0"


def phases(rows: list[tuple[str, float, float, bool]], gaps: list[tuple[float, float]], gap_label: str,
           element_id: str = "phases-chart", width: int = 900) -> str:
    """The run's wall time as Airflow's Gantt view draws it: a row per phase (label, start and seconds after the
    run started, failed) and one row for the time outside them (``gaps``, grey), so nothing of it is unaccounted."""
    labels = [r[0] for r in rows] + ([gap_label] if gaps else [])
    fig, ax = _figure(width, 70 + 22 * len(labels), layout=None)
    for y, (_, start, secs, failed) in enumerate(rows):
        ax.broken_barh([(start, max(secs, 1e-3))], (y - 0.4, 0.8), facecolors=FAILED if failed else PALETTE[0])
    if gaps:
        ax.broken_barh([(a, max(b, 1e-3)) for a, b in gaps], (len(rows) - 0.4, 0.8), facecolors=BETWEEN)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds since the DAG run started (red: failed; grey: Airflow, outside the phases)")
    ax.grid(axis="x", alpha=0.3)
    _fit(fig, ax)
    return to_svg(fig, element_id, len(rows) + len(gaps), "Phases over the run's wall time")


#: More task attempts than this and the timeline is drawn per node and time bucket (a heat map)
#: instead of one bar per attempt: at 4,000 tasks the bars alone made the SVG megabytes.
TIMELINE_DETAIL_MAX = 400
TIMELINE_BUCKETS = 300


def timeline_buckets(tasks: list[dict[str, Any]], buckets: int = TIMELINE_BUCKETS):
    """Tasks running per node and time bucket: (hosts, bucket seconds, rows of busy-task-seconds / bucket)."""
    import numpy as np

    t0 = min(t["start"] for t in tasks)
    span = max(max(t["end"] for t in tasks) - t0, 1e-3)
    width = span / buckets
    hosts = sorted({t["host"] or "?" for t in tasks})
    row = {h: i for i, h in enumerate(hosts)}
    busy = np.zeros((len(hosts), buckets))
    edges = np.arange(buckets) * width
    for t in tasks:
        a, b = t["start"] - t0, t["end"] - t0
        overlap = np.clip(np.minimum(edges + width, b) - np.maximum(edges, a), 0, None)
        busy[row[t["host"] or "?"]] += overlap / width
    return hosts, width, busy


def timeline_heatmap(tasks: list[dict[str, Any]], element_id: str = "timeline", width: int = 900) -> str:
    """Tasks running at once per node over the run (one row per node, colour = tasks busy), for big runs."""
    hosts, bucket, busy = timeline_buckets(tasks)
    fig, ax = _figure(width, 90 + 16 * min(len(hosts), 60))
    image = ax.imshow(busy, aspect="auto", interpolation="nearest", cmap="viridis",
                      extent=(0, bucket * busy.shape[1], len(hosts) - 0.5, -0.5))
    fig.colorbar(image, ax=ax, label="tasks running", pad=0.01)
    step = max(1, len(hosts) // 60)
    ax.set_yticks(range(0, len(hosts), step), [h[:24] for h in hosts[::step]])
    ax.set_xlabel(f"seconds since the first task started ({len(tasks)} task attempts on {len(hosts)} node(s), "
                  f"{bucket:.0f} s buckets; failed attempts: {sum(1 for t in tasks if t.get('exit') != 0)})")
    return to_svg(fig, element_id, len(tasks), "Array tasks running per node")


def histogram(seconds: list[float], element_id: str = "histogram", width: int = 900, height: int = 260,
              xlabel: str = "seconds per image", spread: tuple[float, float, float] | None = None) -> str:
    """Values binned (at most 20 bars, whatever their number); ``spread``: (q1, median, q3) drawn over them."""
    fig, ax = _figure(width, height, layout=None)
    import numpy as np

    values = np.asarray(seconds, dtype=float)   # binned here: one bar per bin whatever the image count
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=min(20, max(len(np.unique(values)), 1)))
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=PALETTE[0], edgecolor="white")
    if spread:
        ax.axvspan(spread[0], spread[2], color=PALETTE[1], alpha=0.15, label="IQR")
        ax.axvline(spread[1], color=PALETTE[1], linewidth=2, label=f"median {spread[1]:.4g}")
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.grid(axis="y", alpha=0.3)
    _fit(fig, ax)
    return to_svg(fig, element_id, int(sum(1 for c in counts if c)), xlabel.capitalize())


def tradeoff(options: list[dict[str, Any]], best: dict[str, Any] | None, deadline_h: float | None,
             front: list[dict[str, Any]] | None = None, element_id: str = "tradeoff-chart", width: int = 860,
             height: int = 360) -> str:
    """Duration (h) against cost (USD): every option a small grey dot, the Pareto front (``front``) a line of
    large dots, each its own colour and marker, named in the legend (no text on the plot to overlap); the pick
    is ringed."""
    fig, ax = _figure(width, height)
    import matplotlib

    front = front if front is not None else options
    ax.scatter([o["duration_s"] / 3600 for o in options], [o["cost_usd"] for o in options], s=12, color="#c8c8c8",
               zorder=1, label=f"every option ({len(options)})")
    ax.plot([o["duration_s"] / 3600 for o in front], [o["cost_usd"] for o in front], color="#888", linewidth=1,
            zorder=2)
    colours = matplotlib.colormaps["tab20"].colors
    markers = "os^Dv<>ph*"
    for i, o in enumerate(front[:20]):
        ax.scatter([o["duration_s"] / 3600], [o["cost_usd"]], s=60, zorder=3, color=colours[i * 2 % 20 + i // 10],
                   marker=markers[i % len(markers)], edgecolors="black", linewidths=0.5,
                   label=f"{o['nodes']} × {o['instance_type']}" if not o.get("own") else o["instance_type"])
    if deadline_h:
        ax.axvline(deadline_h, color="#999", linestyle="--", linewidth=1, label=f"deadline {deadline_h * 60:g} min")
    if best:
        ax.scatter([best["duration_s"] / 3600], [best["cost_usd"]], s=260, facecolors="none", edgecolors="black",
                   linewidths=2, zorder=5, label="cheapest within the deadline" if deadline_h else "cheapest")
    ax.set_xlabel("duration (hours)")
    ax.set_ylabel("cost (USD)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return to_svg(fig, element_id, len(options), "Duration against cost: the Pareto front")
