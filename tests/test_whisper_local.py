"""Local Whisper's short-context decodes on the real model: loops are caught, finals recovered."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from stt_service.backends import whisper_local
from stt_service.backends.whisper_local import WhisperLocal, repeats, usable_cpus
from stt_service.commands.client import word_error_rate
from stt_service.config import load_settings
from tests.speech import utterance


def test_repeats_finds_loops_too_short_for_the_compression_ratio() -> None:
    he_was_not = [1, 2, 3, 4]
    assert repeats(he_was_not * 3 + [1, 2])  # "He was not. He was not. He was not. He was"
    assert repeats([7, 8] * 8)  # "-y-y-y-y-y-y-y-y"
    assert repeats(list(range(10)) * 2)  # a sentence said twice
    assert not repeats([5, 5, 5])  # "no no no"
    assert not repeats(list(range(20)))
    assert not repeats([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3])


def test_a_final_gets_a_window_that_does_not_loop_and_a_loop_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """tiny.en on 0880 cut 40 ms in, with a 5 s window, greedily loops "He was not an
    old-s-y-y-y-y-..." (short enough to pass the compression ratio). A final gets a 10 s window
    and no loop. With the 5 s window the loop is caught and the final decoded again with more
    context; a partial (5 s, greedy) that loops is dropped rather than shown."""
    model = WhisperLocal(load_settings(whisper_short_context="all"))
    asyncio.run(model.start())
    u = utterance("0880")
    audio = np.concatenate([u.samples, np.zeros(16000, np.int16)])[640 : 640 + 48000]

    [final] = model._decode_batch([(audio, "en", (), True)])
    assert not isinstance(final, Exception)
    assert model.fallbacks == 0
    assert word_error_rate(u.reference, final.text) <= 0.25, final.text

    monkeypatch.setattr(whisper_local, "FINAL_MIN_CONTEXT", 0)
    [final] = model._decode_batch([(audio, "en", (), True)])
    assert not isinstance(final, Exception)
    assert model.fallbacks == 1
    assert word_error_rate(u.reference, final.text) <= 0.25, final.text
    assert "y-y" not in final.text

    [partial] = model._decode_batch([(audio, "en", (), False)])
    asyncio.run(model.aclose())
    assert not isinstance(partial, Exception)
    assert "y-y" not in partial.text


def test_decode_threads_follow_a_container_cpu_limit(tmp_path: Path) -> None:
    """A pod's CPU limit (cgroup v2 cpu.max) caps the CPUs the model's threads are sized for."""
    cpu_max = tmp_path / "cpu.max"
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path / "missing") == affinity
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a CPU: still one thread
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{affinity * 100000 + 1} 100000\n")  # more than this machine has
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("garbage")
    assert usable_cpus(cpu_max) == affinity


def test_decodes_at_once_and_threads_each_divide_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU each decode gets a quarter of the usable CPUs (at least one thread) and as many
    decodes run at once as that fills; the settings override either. Nothing is loaded."""

    def sizing(cpus: int, **settings: int) -> tuple[int, int]:
        monkeypatch.setattr(whisper_local, "usable_cpus", lambda: cpus)
        model = WhisperLocal(load_settings(whisper_device="cpu", **settings))
        model._executor.shutdown()
        return model.threads, model.workers

    assert sizing(2) == (1, 2)
    assert sizing(8) == (2, 4)
    assert sizing(16) == (4, 4)
    assert sizing(8, whisper_cpu_threads=1) == (1, 8)
    assert sizing(8, whisper_workers=1) == (2, 1)
