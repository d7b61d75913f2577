"""The report's charts (matplotlib, Agg), drawn from the job :class:`Summary` alone.

Every number comes from the merged per-partition summaries (counts, sums, fixed-bin
histograms), never from a reread of the buildings, so the charts cost the same for a district
and a country. Each chart is a small PNG (≈ 20–40 KB); a chart with nothing to show is left
out, and the report says so instead.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: services and CI have no display
import matplotlib.pyplot as plt
import numpy as np

from urbanfabric.outputs.histograms import edges, total
from urbanfabric.outputs.summary import Summary

#: Chart name → title (also the order in the report and the file name ``<name>.png``).
CHARTS = {
    "stock": "Material stock by material (t), p05–p95",
    "heights": "Buildings by height",
    "ages": "Buildings by construction year",
    "roofs": "Roof-material mix",
    "unknowns": "Unknowns per attribute and fallbacks",
    "timings": "Time per stage",
}
DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def stock_chart(summary: Summary) -> bytes | None:
    """Horizontal bars of tonnes per material, p05–p95 as error bars (largest first)."""
    if not summary.mass_kg or not any(summary.mass_kg.values()):
        return None
    items = sorted(summary.mass_kg.items(), key=lambda kv: kv[1])
    names = [k for k, _ in items]
    t = np.array([v for _, v in items]) / 1000
    low = np.array([summary.mass_kg_p05.get(k, v) for k, v in items]) / 1000
    high = np.array([summary.mass_kg_p95.get(k, v) for k, v in items]) / 1000
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.4), constrained_layout=True)
    ax.barh(names, t, color="#4c78a8")
    has_range = bool(summary.mass_kg_p05)
    if has_range:
        err = np.vstack([np.clip(t - low, 0, None), np.clip(high - t, 0, None)])
        ax.errorbar(t, names, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1, label="p05–p95")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("tonnes (point estimate: p50 intensity × GFA)")
    ax.set_title(CHARTS["stock"] if has_range else "Material stock by material (t)", fontsize=10)
    ax.ticklabel_format(axis="x", style="plain")
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    return _png(fig)


def _histogram_chart(h: dict | None, title: str, xlabel: str, bin_width: float) -> bytes | None:
    """Bars of a fixed-bin histogram regrouped to ``bin_width`` and cropped to its data."""
    if not h or total(h) == 0 or not any(h["counts"]):
        return None
    counts = np.asarray(h["counts"])
    group = max(1, round(bin_width / h["step"]))
    padded = np.concatenate([counts, np.zeros((-len(counts)) % group, dtype=counts.dtype)])
    wide = padded.reshape(-1, group).sum(axis=1)
    used = np.flatnonzero(wide)
    grouped = wide[used[0]:used[-1] + 1]
    left = h["start"] + h["step"] * group * np.arange(used[0], used[-1] + 1)
    fig, ax = plt.subplots(figsize=(7, 3.2), constrained_layout=True)
    ax.bar(left, grouped, width=h["step"] * group, align="edge", color="#59a14f", edgecolor="white", lw=0.5)
    notes = []
    if h.get("below"):
        notes.append(f"{h['below']} below {h['start']:g}")
    if h.get("above"):
        notes.append(f"{h['above']} above {edges(h)[-1]:g}")
    if h.get("missing"):
        notes.append(f"{h['missing']} without a value")
    ax.set_title(title + (f" ({'; '.join(notes)})" if notes else ""), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("buildings")
    return _png(fig)


def heights_chart(summary: Summary) -> bytes | None:
    return _histogram_chart(summary.height_histogram, CHARTS["heights"], "predicted height (m), 2 m bins", 2)


def ages_chart(summary: Summary) -> bytes | None:
    return _histogram_chart(summary.year_histogram, CHARTS["ages"], "predicted construction year, 5-year bins", 5)


def roofs_chart(summary: Summary) -> bytes | None:
    """Bars of buildings per roof material (``unknown`` and ``no imagery`` in grey)."""
    mix = summary.roof_material_mix
    if not mix:
        return None
    items = sorted(mix.items(), key=lambda kv: kv[1])
    n = sum(mix.values())
    colors = ["#bab0ac" if k in ("unknown", "no imagery") else "#e15759" for k, _ in items]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.4), constrained_layout=True)
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color=colors)
    ax.bar_label(bars, labels=[f"{v / n:.0%}" for _, v in items], fontsize=8, padding=2)
    ax.set_xlabel("buildings")
    ax.set_title(CHARTS["roofs"], fontsize=10)
    return _png(fig)


def unknowns_chart(summary: Summary) -> bytes | None:
    """Share of buildings left unknown per class attribute, and with each fallback token."""
    rows = [(f"{a['attribute']} unknown", a["unknown"] / max(1, a["kept"] + a["unknown"]))
            for a in summary.abstention]
    n = max(1, summary.buildings)
    rows += [(f"fallback: {k}", v / n) for k, v in list(summary.fallbacks.items())[:12]]
    if not rows:
        return None
    rows = rows[::-1]
    colors = ["#f28e2b" if name.startswith("fallback") else "#76b7b2" for name, _ in rows]
    fig, ax = plt.subplots(figsize=(7, 0.33 * len(rows) + 1.4), constrained_layout=True)
    bars = ax.barh([r[0] for r in rows], [100 * r[1] for r in rows], color=colors)
    ax.bar_label(bars, labels=[f"{100 * r[1]:.0f} %" for r in rows], fontsize=8, padding=2)
    ax.set_xlim(0, 110)
    ax.set_xlabel("share of buildings (%)")
    ax.set_title(CHARTS["unknowns"], fontsize=10)
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


def timings_chart(summary: Summary) -> bytes | None:
    """Seconds per stage: wall-clock stages apart from task time summed over workers."""
    if not summary.stage_seconds:
        return None
    items = list(summary.stage_seconds.items())[::-1]
    colors = ["#9c755f" if "(wall)" in k else "#edc948" for k, _ in items]
    fig, ax = plt.subplots(figsize=(7, 0.33 * len(items) + 1.4), constrained_layout=True)
    bars = ax.barh([k for k, _ in items], [v for _, v in items], color=colors)
    ax.bar_label(bars, labels=[f"{v:,.1f} s" for _, v in items], fontsize=8, padding=2)
    ax.set_xlabel("seconds (wall = elapsed; others summed over tasks)")
    ax.set_title(CHARTS["timings"], fontsize=10)
    ax.set_xlim(0, max(v for _, v in items) * 1.25 or 1)
    return _png(fig)


def report_charts(summary: Summary) -> dict[str, bytes]:
    """Every chart with something to show, in :data:`CHARTS` order."""
    makers = {"stock": stock_chart, "heights": heights_chart, "ages": ages_chart, "roofs": roofs_chart,
              "unknowns": unknowns_chart, "timings": timings_chart}
    out = {}
    for name in CHARTS:
        png = makers[name](summary)
        if png is not None:
            out[name] = png
    return out
