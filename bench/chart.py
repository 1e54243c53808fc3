"""Latency percentiles against concurrent sessions, from the benchmarks' JSON, as one PNG.

    uv run --with matplotlib python bench/chart.py
    uv run --with matplotlib python bench/chart.py --results bench/results --out latency.png

matplotlib is not a dependency of the project, hence ``--with matplotlib``. Reads
``{results}/results.json`` (``bench/run.py``: end of speech -> final transcript p50/p95/p99,
speech onset -> first partial p50 and -> interrupt p95, per session count) and, when present,
``{results}/msgpath.json`` (``bench/msgpath.py``: per-chunk handling time and chunk lag p50/p99/max
per session count, the 20 ms lag bar, and where the worker's and the bare subscriber's message
ceilings would put the session count at 10 chunks per session per second). Points of runs that
were not real time (``run.py``) or missed the bar (``msgpath.py``) are drawn hollow. The x axis is
logarithmic when the session counts span more than a factor of 4. Writes
``{results}/latency.png`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, NullFormatter

CHUNKS_PER_SESSION_S = 10  # 100 ms chunks in real time


def load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def realtime(run: dict[str, Any]) -> bool:
    return bool(run.get("realtime"))


def meets_bar(run: dict[str, Any]) -> bool:
    return bool(run.get("meets_lag") and run.get("meets_no_drop"))


def series(
    runs: list[dict[str, Any]], key: str, pct: str
) -> tuple[list[int], list[float], list[dict[str, Any]]]:
    """Session counts and values of ``run[key][pct]`` for the runs that have it."""
    kept = [r for r in runs if r.get(key, {}).get(pct) is not None]
    kept.sort(key=lambda r: r["sessions"])
    return [r["sessions"] for r in kept], [float(r[key][pct]) for r in kept], kept


def plot_line(
    ax: Axes,
    runs: list[dict[str, Any]],
    key: str,
    pct: str,
    label: str,
    style: dict[str, Any],
    good: Callable[[dict[str, Any]], bool],
) -> None:
    """One percentile as a line; a run for which ``good`` is false gets a hollow marker."""
    xs, ys, kept = series(runs, key, pct)
    if not xs:
        return
    (line,) = ax.plot(xs, ys, label=label, **style)
    colour = line.get_color()
    for x, y, r in zip(xs, ys, kept, strict=True):
        ok = good(r)
        ax.plot(
            [x],
            [y],
            marker=style.get("marker", "o"),
            markersize=7,
            color=colour,
            markerfacecolor=colour if ok else "white",
            linestyle="none",
        )


def session_axis(ax: Axes, counts: list[int]) -> None:
    """Log x when the counts span more than 4x; ticks at the measured counts."""
    if counts and max(counts) / max(1, min(counts)) > 4:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if counts:
        ax.set_xticks(sorted(set(counts)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("concurrent sessions")
    ax.grid(True, which="major", alpha=0.3)


def whisper_panel(ax: Axes, data: dict[str, Any]) -> None:
    runs = data.get("runs", [])
    plot_line(ax, runs, "final_latency_ms", "p50", "final p50", {"marker": "o"}, realtime)
    plot_line(ax, runs, "final_latency_ms", "p95", "final p95", {"marker": "s"}, realtime)
    plot_line(ax, runs, "final_latency_ms", "p99", "final p99", {"marker": "^"}, realtime)
    plot_line(
        ax,
        runs,
        "first_partial_ms",
        "p50",
        "first partial p50",
        {"marker": "D", "linestyle": "--"},
        realtime,
    )
    plot_line(
        ax,
        runs,
        "interrupt_ms",
        "p95",
        "interrupt p95",
        {"marker": "v", "linestyle": ":"},
        realtime,
    )
    session_axis(ax, [r["sessions"] for r in runs])
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(f"Whisper, real speech (bench/run.py)\n{data.get('machine', '')}", fontsize=10)
    ax.legend(fontsize=8, title="hollow: not real time", title_fontsize=8)


def msgpath_panel(ax: Axes, data: dict[str, Any]) -> None:
    runs = data.get("runs", [])
    plot_line(ax, runs, "chunk_lag_ms", "p50", "chunk lag p50", {"marker": "o"}, meets_bar)
    plot_line(ax, runs, "chunk_lag_ms", "p99", "chunk lag p99", {"marker": "^"}, meets_bar)
    plot_line(
        ax,
        runs,
        "chunk_lag_ms",
        "max",
        "chunk lag max",
        {"marker": "x", "linestyle": ":"},
        meets_bar,
    )
    plot_line(
        ax,
        runs,
        "chunk_handling_ms",
        "p99",
        "chunk handling p99",
        {"marker": "s", "linestyle": "--"},
        meets_bar,
    )
    for r in runs:  # what the worker never handled, beside the p99 point
        published, dropped = r.get("chunks_published") or 0, r.get("dropped") or 0
        if published and dropped > 0 and r.get("chunk_lag_ms", {}).get("p99") is not None:
            ax.annotate(
                f"{dropped / published:.0%} dropped",
                (r["sessions"], r["chunk_lag_ms"]["p99"]),
                textcoords="offset points",
                xytext=(-10, 10),
                ha="right",
                fontsize=8,
                color="firebrick",
            )
    counts = [r["sessions"] for r in runs]
    limit = (data.get("settings") or {}).get("lag_limit_ms", 20)
    ax.axhline(limit, color="red", linestyle="--", linewidth=1, label=f"{limit:g} ms bar")
    session_axis(ax, counts)
    worker = data.get("worker_ceiling") or {}
    accepted = worker.get("accepted_per_s") or worker.get("msgs_per_s")  # older files: taken
    if accepted:
        at = accepted / CHUNKS_PER_SESSION_S
        ax.axvline(
            at,
            color="grey",
            linestyle="-.",
            linewidth=1,
            label=f"worker ceiling: {accepted} chunks/s ≈ {at:.0f} sessions",
        )
        lo, hi = ax.get_xlim()
        ax.set_xlim(min(lo, at * 0.8), max(hi, at * 1.2))
    ceiling = data.get("ceiling") or {}
    if ceiling.get("msgs_per_s"):
        at = ceiling["msgs_per_s"] / CHUNKS_PER_SESSION_S
        # usually far right of the measured counts: a legend entry, not a line
        ax.plot(
            [],
            [],
            linestyle="none",
            label=f"bare subscriber: {ceiling['msgs_per_s']} msgs/s ≈ {at:.0f} sessions",
        )
    ax.set_yscale("log")
    ax.set_ylabel("ms (log)")
    settings = data.get("settings") or {}
    ax.set_title(
        "Message path, Flux on the zero-delay emulator (bench/msgpath.py)\n"
        f"{data.get('machine', '')}, {settings.get('duration_s', 0):g} s per level",
        fontsize=10,
    )
    ax.legend(fontsize=8, title="hollow: missed the bar", title_fontsize=8, loc="best")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--results", default="bench/results", help="folder of the JSON results")
    ap.add_argument("--out", default=None, help="PNG path (default: {results}/latency.png)")
    args = ap.parse_args()
    folder = Path(args.results)
    whisper = load(folder / "results.json")
    msgpath = load(folder / "msgpath.json")
    panels = [(p, d) for p, d in ((whisper_panel, whisper), (msgpath_panel, msgpath)) if d]
    if not panels:
        print(
            f"nothing to draw: neither {folder / 'results.json'} nor {folder / 'msgpath.json'} "
            "exists (run bench/run.py or bench/msgpath.py first)",
            file=sys.stderr,
        )
        return 1
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    for ax, (draw, data) in zip(axes[0], panels, strict=True):
        draw(ax, data)
    fig.tight_layout()
    out = Path(args.out) if args.out else folder / "latency.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
