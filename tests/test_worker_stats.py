"""The worker's per-chunk figures: a bounded window of recent durations."""

from __future__ import annotations

from stt_service.runner.stats import LatencyWindow


def test_latency_window_summarises_only_the_recent_values() -> None:
    window = LatencyWindow(keep=100)
    assert window.summary() == "none"
    for ms in range(1, 201):
        window.add(ms / 1000)
    # percentiles over the last 100 (101-200 ms); max and count over everything
    assert window.summary() == "p50 151.0 ms, p99 200.0 ms, max 200.0 ms over 200"
