"""What the benchmark scripts share: percentiles, and a process's CPU and memory from /proc."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path


def pct_ms(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of durations in seconds (empty: ``{}``)."""
    if not values:
        return {}
    v = sorted(values)

    def at(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(v[-1] * 1000, 2)}


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/{pid}/status`` (``VmRSS``, ``VmHWM``: the peak), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads, summed by thread name (``comm``)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = "main (Python)" if task.name == str(pid) else re.sub(r"[-_]?\d+$", "", name)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, every process), from /proc/stat."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
