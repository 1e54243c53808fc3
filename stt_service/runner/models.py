"""The speech models the runner runs for many sessions at once, off each session's own path.

- The voice detector's network (Silero): frames of many sessions go through one call, gathered
  for ``STT_VAD_BATCH_MS`` (:class:`~..speech.voicebatch.VoiceBatcher`); a session whose frames
  wait is told when they are decided (``VoiceReady``), and the chunks that waited get their lag
  counted then.
- The end-of-turn model (Smart Turn): a thread of its own (:class:`~..speech.turnbatch.
  TurnRunner`), asked at a pause (``PredictTurn``); its answer goes back as a ``TurnVerdict``.

Both answers go into the session's core through the runner's one way in (``feed``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ..audio import Int16Array
from ..config import Settings
from ..session import VOICE_READY, Input, SessionConfig, TurnVerdict
from ..speech.silero import shared_model
from ..speech.smartturn import MODEL_PATH as TURN_MODEL_PATH
from ..speech.smartturn import shared_model as turn_model
from ..speech.turnbatch import TurnRunner
from ..speech.voicebatch import VoiceBatcher
from ..telemetry import Telemetry
from .inlet import Live
from .stats import WorkerStats

Feed = Callable[[Live, Input, float], Awaitable[bool]]


class SharedModels:
    def __init__(
        self,
        settings: Settings,
        config: SessionConfig,
        feed: Feed,
        stats: WorkerStats,
        tel: Telemetry,
    ) -> None:
        self._settings = settings
        self._config = config
        self._feed = feed
        self._stats = stats
        self._tel = tel
        self._silero = settings.stt_vad == "silero"
        # Silero's frames of many sessions go through one network call (STT_VAD_BATCH_MS)
        self.batched = self._silero and settings.stt_vad_batch_ms > 0
        self.voice: VoiceBatcher[Live] = VoiceBatcher(
            settings.stt_vad_batch_ms / 1000, lambda live: live.session.voice, self._voice_ready
        )
        # the end-of-turn model's thread (loaded in load(): a broken file fails there)
        self.turns: TurnRunner[tuple[Live, int, int]] | None = None

    def load(self) -> None:
        """Load the models now: a broken install fails at start-up, not on the first chunk."""
        if self._silero:
            shared_model()
        if self._config.turn_model and self.turns is None:
            path = self._settings.stt_turn_model_path or str(TURN_MODEL_PATH)
            self.turns = TurnRunner(turn_model(path), self._turn_verdict)

    # --- the voice detector ---------------------------------------------------------------------
    def handled(self, live: Live) -> None:
        """The session's core took an input: frames it left waiting go to the batcher; if none
        wait, the chunks that waited before are handled now."""
        if live.session.awaiting_voice:
            self.voice.want(live)
        elif live.voice_due:
            self.voice_done(live)

    def voice_done(self, live: Live) -> None:
        """The chunks whose frames waited for the voice batcher are handled: count their lag."""
        done = time.time()
        for sent in live.voice_due:
            self._stats.chunk_lag.add(done - sent)
        live.voice_due.clear()

    async def _voice_ready(self, lives: list[Live]) -> None:
        """The voice batcher decided these sessions' waiting frames: each goes on from there."""
        self._tel.vad_frames = self.voice.stats.frames
        self._tel.vad_calls = self.voice.stats.calls
        now = time.time()
        for live in lives:
            if live.abandoned or live.session.closed:
                if live.voice_due:
                    self.voice_done(live)
                continue
            await self._feed(live, VOICE_READY, now)
            self.handled(live)  # messages queued behind those frames may have brought more

    async def close_voice(self) -> None:
        """No more batches: sessions closing after this decide their frames themselves."""
        await self.voice.aclose()
        if self._silero:
            self._stats.vad = self.voice.stats.summary()

    # --- the end-of-turn model ------------------------------------------------------------------
    def ask_turn(self, live: Live, utterance: int, seq: int, audio: Int16Array) -> None:
        if self.turns is not None:
            self.turns.ask((live, utterance, seq), audio)

    async def _turn_verdict(self, key: tuple[Live, int, int], probability: float | None) -> None:
        """The end-of-turn model answered for a session's pause: it ends the turn, or waits."""
        live, utterance, seq = key
        if not live.abandoned:
            await self._feed(live, TurnVerdict(utterance, seq, probability), time.time())

    async def close_turns(self) -> None:
        if self.turns is not None:
            await self.turns.aclose()
            self._stats.turns = self.turns.stats.summary()
