"""The session: one client's session, wired from its parts. Inputs and time in, actions out.

:meth:`Session.feed` is the one entry point: a client's message, a recognizer event, the voice
detector's or the end-of-turn model's answer, a clock tick or a shutdown (:mod:`.inputs`), with
the time it happened; it returns the :mod:`.actions` to carry out. ``handle``, ``on_event``,
``voice_ready``, ``turn_verdict``, ``tick`` and ``close`` are the same call for one kind of input.

The session owns the order of things and its client-visible state (``listening`` or
``responding``, the speaker, the stream options); its parts own the rest:

- :class:`~.intake.Intake`: chunks in, 16 kHz frames with voice verdicts out, audio and arrival
  clocks;
- a :class:`~.segmenter.Segmenter`: which frames go to the recognizer as which utterance, and
  where each ends (:class:`~.segmenter.ServiceSegmenter` with the end-of-turn decision of
  :mod:`.turns` and the turn map of :mod:`.turnmap`, or :class:`~.passthrough.PassThrough`);
- :class:`~.interrupts.Interrupts`: barge-in, which asks for the state that follows it;
- :class:`~.results.Results`: transcripts as published, numbered, with their latency;
- :class:`~.record.Records`: one record per utterance in flight, shared by those parts;
- :class:`~.inbox.Inbox`: messages that wait, in order, behind frames the voice detector has not
  decided yet (``batched``).
"""

from __future__ import annotations

import logging

from ..audio import Int16Array
from ..backends.base import (
    EndpointHint,
    RecognitionError,
    RecognitionEvent,
    StreamEvent,
    StreamParams,
)
from ..protocol import (
    Chunk,
    Code,
    Configure,
    End,
    Finalize,
    Inbound,
    Playback,
    Start,
    State,
    StateChange,
    error_message,
)
from ..speech.vad import FrameInfo, VoiceDetector
from .actions import Action, Close, Publish, Reconfigure
from .config import SessionConfig
from .eager import publish as publish_announced
from .identity import Identity
from .inbox import Inbox
from .inputs import VOICE_READY, Input, Shutdown, Tick, TurnVerdict, VoiceReady
from .intake import Intake
from .interrupts import Interrupts, Step
from .lifetime import expired
from .passthrough import PassThrough
from .record import Records
from .results import Results
from .segmenter import Segmenter, ServiceSegmenter
from .snapshot import Progress, Snapshot

log = logging.getLogger(__name__)


class Session:
    """One client session: inputs in, actions out (see the module docstring)."""

    def __init__(self, session_id: str, config: SessionConfig, now: float) -> None:
        self.id = session_id
        self.config = config
        self.state: State = "listening"
        self.who = Identity(session_id)
        self.params = StreamParams(session_id=session_id)
        self.started_explicitly = False
        self.closed = False
        self.opened_at = now
        self.last_message_at = now
        # True when the worker runs the voice detector's network for many sessions at once (it
        # then feeds VoiceReady); False: each chunk's frames are decided before feed() returns
        self.batched = False
        self.intake = Intake(config, now)
        self._inbox = Inbox(self.intake)
        self.records = Records()
        self._barge = Interrupts(config, self.who, self.intake)
        self._results = Results(self.who, self.records, self.intake)
        self._segmenter: Segmenter = (
            ServiceSegmenter(config, self.records, self._barge.ended, self.intake)
            if config.service_endpointing
            else PassThrough()
        )
        self._voice_needed()

    # --- the entry point ------------------------------------------------------------------------
    def feed(self, item: Input, now: float) -> list[Action]:
        """Everything a session hears goes in here (see :mod:`.inputs`)."""
        match item:
            case RecognitionEvent() | RecognitionError() | EndpointHint():
                return self._recognized(item, now)
            case VoiceReady():
                return [] if self.closed else self._advance(now)
            case TurnVerdict(utterance, seq, probability):
                if self.closed:
                    return []
                actions = self._segmenter.verdict(utterance, seq, probability, now)
                return self._announced(now) + actions
            case Tick():
                return self._tick(now)
            case Shutdown(reason):
                return self.close(now, reason)
        return self._message(item, now)

    def handle(self, msg: Inbound, now: float) -> list[Action]:
        """A client's message."""
        return self._message(msg, now)

    def on_event(self, ev: StreamEvent, now: float) -> list[Action]:
        """A recognizer event."""
        return self._recognized(ev, now)

    def voice_ready(self, now: float) -> list[Action]:
        """The network has decided this session's waiting frames (batched mode): go on."""
        return self.feed(VOICE_READY, now)

    def turn_verdict(
        self, utterance: int, seq: int, probability: float | None, now: float
    ) -> list[Action]:
        """The end-of-turn model's answer to a ``PredictTurn`` (None: it failed)."""
        return self.feed(TurnVerdict(utterance, seq, probability), now)

    def tick(self, now: float) -> list[Action]:
        """The clock (the worker's, every 50 ms)."""
        return self._tick(now)

    # --- what the runner reads ------------------------------------------------------------------
    @property
    def speaker_id(self) -> str | None:
        return self.who.speaker_id

    @property
    def samples_heard(self) -> int:
        """16 kHz samples through the voice detector and taken by the session."""
        return self.intake.heard

    @property
    def queued(self) -> int:
        """16 kHz samples received so far (some may still wait for the voice detector)."""
        return self.intake.queued

    @property
    def unheard(self) -> int:
        """16 kHz samples received, not yet through the voice detector (about: see ``Inbox``)."""
        return self.intake.queued - self.intake.heard + self._inbox.samples

    @property
    def voice(self) -> VoiceDetector:
        """This session's voice detector (the worker's batcher runs its network)."""
        return self.intake.detector

    @property
    def awaiting_voice(self) -> bool:
        """Frames (and maybe messages behind them) wait for the network: see ``batched``."""
        return self.intake.waiting

    @property
    def in_utterance(self) -> bool:
        return self._segmenter.in_utterance

    @property
    def sequence(self) -> int:
        return self._results.sequence

    @property
    def last_turn(self) -> int:
        return self._results.last_turn

    @property
    def interrupts(self) -> int:
        return self._barge.published

    @property
    def cancelled_interrupts(self) -> int:
        return self._barge.cancelled

    def turn_of(self, utterance: int) -> int:
        """The turn an utterance belongs to: what its final's ``turn_index`` says."""
        return self._segmenter.turn_of(utterance)

    # --- client messages ------------------------------------------------------------------------
    def _message(self, msg: Inbound, now: float) -> list[Action]:
        if self.closed:
            return []
        self.last_message_at = now
        self._inbox.put(msg, now)
        if isinstance(msg, End):
            # decided at once, frames still waiting included: the session must be closed when
            # this returns, so that a 'start' right behind it opens a new session under the id
            return self.close(now, reason="end")
        return self._advance(now)

    def _advance(self, now: float) -> list[Action]:
        """Handle what can be handled now: frames whose voice verdict is known, then the
        messages queued behind frames that waited for the network, in arrival order."""
        actions: list[Action] = []
        while not self.closed:
            for frame, info in self.intake.ready(inline=not self.batched):
                self._frame(frame, info, now, actions)
            if self.intake.waiting or not self._inbox:
                break
            actions += self._dispatch(*self._inbox.take())
        if self.closed:
            self._inbox.clear()
        return actions

    def _dispatch(self, msg: Inbound, now: float) -> list[Action]:
        match msg:
            case Chunk():
                if not self.started_explicitly and self.intake.chunks == 0:
                    log.info("session %s: first chunk without start; using defaults", self.id)
                self.intake.push(msg.pcm, now)
                return []
            case Playback():
                resynced = self.intake.playback(msg.pcm, msg.sample_rate, now)
                return (
                    [] if resynced is None else [self._error(Code.PLAYBACK_RESYNC, resynced, now)]
                )
            case Start():
                return self._on_start(msg, now)
            case StateChange():
                self._barge.client_decides()  # the client decides about the last interrupt now
                self._set_state(msg.state)
                return []
            case Configure():
                return self._on_configure(msg)
            case Finalize():
                return self._segmenter.finalize(now, self.intake)
            case End():
                return self._close(now, reason="end")
        return []  # pragma: no cover - exhaustive above

    def _on_start(self, msg: Start, now: float) -> list[Action]:
        if self.intake.started:
            return [
                self._error(
                    Code.SESSION_ALREADY_STARTED,
                    "start: this session is already streaming audio; send 'end' first "
                    "to start a new stream under the same id",
                    now,
                )
            ]
        self.started_explicitly = True
        self.intake.set_format(msg.sample_rate, msg.channels)
        self.who.speaker_id = msg.speaker_id
        self.params = StreamParams(
            session_id=self.id,
            language=msg.language,
            keyterms=tuple(msg.keyterms or ()),
            eot_threshold=msg.eot_threshold,
            eager_eot_threshold=msg.eager_eot_threshold,
            eot_timeout_ms=msg.eot_timeout_ms,
        )
        self._segmenter.tune(self.params)
        self._barge.client_decides()
        self._set_state(msg.state)
        return [Reconfigure(self.params)]

    def _on_configure(self, msg: Configure) -> list[Action]:
        changes = {
            k: v for k, v in msg.model_dump(exclude={"type", "session_id"}).items() if v is not None
        }
        if "keyterms" in changes:
            changes["keyterms"] = tuple(changes["keyterms"])
        fields = {f: getattr(self.params, f) for f in self.params.__dataclass_fields__}
        self.params = StreamParams(**{**fields, **changes})
        self._segmenter.tune(self.params)
        return [Reconfigure(self.params)]

    def _set_state(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self._barge.state_changed()
        self._voice_needed()

    def _voice_needed(self) -> None:
        """Where the backend finds turns, the voice detector runs only for barge-in."""
        if not self._segmenter.needs_voice:
            self.intake.detector.needed = self._barge.wanted(self.state)

    def _apply(self, step: Step | None, actions: list[Action]) -> None:
        """Carry out what barge-in decided: publish, and take the state it asks for."""
        if step is not None:
            actions += step[0]
            self._set_state(step[1])
        self._voice_needed()

    # --- audio ----------------------------------------------------------------------------------
    def _frame(self, frame: Int16Array, info: FrameInfo, now: float, actions: list[Action]) -> None:
        offset = self.intake.take(frame, info)
        if self._barge.possible(self.state, offset):
            step = self._barge.frame(info, now, self._segmenter.barge_utterance())
            if step is not None:
                self._apply(step, actions)
        self._segmenter.frame(frame, info, offset, now, actions)
        if self._segmenter.announced:
            actions[:0] = self._announced(now)

    def _announced(self, now: float) -> list[Action]:
        return publish_announced(self._segmenter, self._results, self.state, now)

    # --- recognizer results ---------------------------------------------------------------------
    def _recognized(self, ev: StreamEvent, now: float) -> list[Action]:
        seg = self._segmenter
        if isinstance(ev, RecognitionError):
            actions: list[Action] = [self._error(ev.code, ev.message, now)]
            if ev.utterance is not None:
                joined = seg.failed(ev.utterance)  # the rest of its turn, where it was a stretch
                if joined is not None:
                    actions += self._recognized(joined, now)
            return actions
        if isinstance(ev, EndpointHint):
            actions = seg.hint(ev, now)
            return self._announced(now) + actions
        actions = []
        self._apply(self._barge.started_speaking(ev, self.state, now), actions)
        if seg.stale(ev) or not self._results.fresh(ev):
            return actions  # a late partial, a repeated final, or one published before a failover
        step = self._barge.heard(
            ev, self.state, now, utterance=seg.utterance_of(ev), onset_s=seg.speech_onset(ev)
        )
        self._apply(step, actions)
        joined, turn = seg.join(ev)
        if joined is None:  # a stretch of a turn that goes on: its final waits for the rest
            return actions
        seg.result(joined)
        voice, eot, bounds = seg.about(joined)
        actions += self._results.publish(
            joined, turn=turn, voice=voice, eot=eot, bounds=bounds, state=self.state, now=now
        )
        return actions

    # --- time -----------------------------------------------------------------------------------
    def _tick(self, now: float) -> list[Action]:
        """Clock-driven endings: a speaker whose chunks stopped mid-utterance, an idle session,
        a session past its longest duration, an interrupt whose speech held no words."""
        if self.closed:
            return []
        c = self.config
        over = expired(c, now, self.opened_at, self.last_message_at)
        if over is not None:
            return [self._error(over.code, over.message, now), *self.close(now, over.reason)]
        actions: list[Action] = []
        step = self._barge.tick(
            now,
            speaking=self.intake.speaking(c.hangover_s),
            waits_for_final=self._segmenter.waits_for_final,
        )
        self._apply(step, actions)
        pending_audio = self._inbox or self.intake.waiting
        if (
            self._segmenter.in_utterance
            and not pending_audio
            and now - self.intake.due_at >= c.hangover_s
        ):
            actions += self._segmenter.end(now)
        return actions

    def close(self, now: float, reason: str) -> list[Action]:
        """Flush pending speech (its final is published before the stream closes), then close.
        Messages still queued behind the voice detector are handled first."""
        if self.closed:
            return []
        self.batched = False
        actions = self._advance(now)  # may close the session itself (an 'end' was queued)
        return actions + self._close(now, reason)

    def _close(self, now: float, reason: str) -> list[Action]:
        if self.closed:
            return []
        actions: list[Action] = []
        for frame, info in self.intake.drain():
            self._frame(frame, info, now, actions)
        actions += self._segmenter.end(now)
        self.closed = True
        actions.append(Close(reason))
        return actions

    def _error(self, code: str, message: str, now: float) -> Publish:
        return Publish(error_message(session_id=self.id, code=code, message=message, timestamp=now))

    # --- failover: snapshot and restore ---------------------------------------------------------
    @property
    def idle(self) -> bool:
        """No speech is being collected now: no utterance open (or, where the backend finds
        turns, none of its turns open)."""
        if self.closed or self._inbox or self.intake.waiting:
            return False
        return self._segmenter.idle

    def finished_before(self, utterance: int) -> bool:
        """Every utterance begun before ``utterance`` has had its final handled."""
        return self._segmenter.finished_before(utterance)

    @property
    def settled(self) -> bool:
        """Every sample heard so far is done with: transcribed into a published final, or
        silence outside any utterance. A replay may then start at the next inbound message."""
        return self.idle and self.finished_before(self._segmenter.next_utterance)

    def snapshot(self) -> Snapshot:
        """What a replay starting at the next inbound message needs (take it while idle; it is
        a valid replay point once ``finished_before(snapshot.next_utterance)``)."""
        n = self.intake.normalizer
        return Snapshot(
            heard=self.intake.heard,
            pending=self.intake.splitter.pending,  # of the next VAD frame (silence: we are idle)
            next_utterance=self._segmenter.next_utterance,
            state=self.state,
            speaker_id=self.who.speaker_id,
            params=self.params,
            sample_rate=n.sample_rate,
            channels=n.channels,
            explicit_start=self.started_explicitly,
            audio_started=self.intake.started,
            opened_at=self.opened_at,
            chunks=self.intake.chunks,
        )

    def progress(self) -> Progress:
        """What was published so far: a restored session never publishes it again."""
        return Progress(
            sequence=self._results.sequence,
            finished=self._segmenter.finished,
            interrupt_at=self._barge.last_onset,
            interrupts=self._barge.published,
            final_end=self._results.published_end,
            turn=self._results.last_turn,
        )

    @classmethod
    def restore(
        cls,
        session_id: str,
        config: SessionConfig,
        now: float,
        snapshot: Snapshot,
        progress: Progress,
    ) -> Session:
        """The session as it was at ``snapshot``, for replaying the inbound messages after it,
        with ``progress`` (from later) keeping what was already published from being published
        again: finals of utterances up to ``finished`` (or turns ending by ``final_end``),
        interrupts beginning by ``interrupt_at``; numbering goes on from ``sequence``."""
        s = cls(session_id, config, snapshot.opened_at)
        s.last_message_at = now
        s.intake.due_at = now
        s.intake.resume(snapshot.heard, snapshot.pending, snapshot.sample_rate, snapshot.channels)
        s.intake.started = snapshot.audio_started
        s.intake.chunks = snapshot.chunks
        s._segmenter.next_utterance = snapshot.next_utterance
        s._segmenter.finished = progress.finished
        s.state = snapshot.state
        s.who.speaker_id = snapshot.speaker_id
        s.params = snapshot.params
        s.started_explicitly = snapshot.explicit_start
        s._results.resume(progress.sequence, progress.final_end, progress.turn)
        s._barge.resume(progress.interrupt_at, progress.interrupts)
        s._segmenter.tune(s.params)  # the session's own end-of-turn options, as before
        s._voice_needed()  # its state may be responding
        return s
