"""The worker's log as the benches read it: its ``worker stats:`` line, and its warnings."""

from __future__ import annotations

import collections
import re
from typing import Any

STATS_LINE = "worker stats:"
_WINDOW = r"p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms over (\d+)"


def parse_worker_stats(line: str) -> dict[str, Any]:
    """The numbers of the worker's ``worker stats: ...`` line (whatever parts it has)."""
    out: dict[str, Any] = {"line": line[line.find(STATS_LINE) :]}
    for key, pattern in (
        ("messages", r"(\d+) messages"),
        ("sessions", r"(\d+) sessions"),
        ("published", r"(\d+) published"),
        ("errors", r"(\d+) errors"),
    ):
        if m := re.search(pattern, line):
            out[key] = int(m.group(1))
    for key, label in (("chunk_handling", "chunk handling "), ("chunk_lag", "chunk lag[^;]*? ")):
        if m := re.search(label + _WINDOW, line):
            p50, p99, top, count = m.groups()
            out[key] = {"p50": float(p50), "p99": float(p99), "max": float(top)}
            out[key + "_count"] = int(count)
    # Silero's network in the worker: frames, calls (so the mean batch) and CPU per frame
    if m := re.search(
        r"voice detector: (\d+) frames in (\d+) calls \(mean batch ([\d.]+)\), "
        r"(\d+) us CPU a frame",
        line,
    ):
        frames, calls, batch, us = m.groups()
        out["vad"] = {
            "frames": int(frames),
            "calls": int(calls),
            "mean_batch": float(batch),
            "us_per_frame": int(us),
            # CPU per second of audio a speaking session costs, at 31.25 frames a second
            "ms_per_audio_s": round(int(us) * 31.25 / 1000, 2),
        }
    return out


def summarize_log(lines: list[str], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Warnings and errors of the worker's log, by message with ids and numbers blanked out;
    lines holding one of ``skip`` are left out."""
    kinds: collections.Counter[str] = collections.Counter()
    for line in lines:
        if any(s in line for s in skip):
            continue
        m = re.search(r" (WARNING|ERROR|CRITICAL)\s+(\S+): (.*)", line)
        if m is None:
            if "Traceback" in line:
                kinds["Traceback"] += 1
            continue
        text = re.sub(r"mp\d+-\d+", "<sid>", m.group(3))
        text = re.sub(r"\d+(\.\d+)?", "#", text)[:140]
        kinds[f"{m.group(1)} {m.group(2)}: {text}"] += 1
    return dict(kinds.most_common(8))
