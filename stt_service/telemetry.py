"""OpenTelemetry traces and metrics, and the service's log format.

``OTEL_ENABLED`` turns on the SDK. Export goes over OTLP/HTTP wherever the standard
``OTEL_*`` variables say (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``..._TRACES_ENDPOINT``,
``..._HEADERS``, ...), or to HyperDX when ``HYPERDX_ENABLED`` (with ``HYPERDX_API_KEY``). With
neither, nothing is exported and start-up says so once, instead of an exporter retrying
``localhost:4318`` forever.

What is recorded (see the README's "Observability"):
- a trace per session (``stt.session``) with a span per utterance or turn (``stt.utterance``) and,
  under it, ``stt.decode`` (end of speech handed to the recognizer until its final came back) and
  ``stt.publish``;
- metrics: active sessions, chunks and audio seconds received, end-of-speech to final latency,
  time to first partial, interrupt latency, backend errors by code, inference queue depth, audio
  waiting for the recognizer, refused messages and dropped publishes.

Spans carry ids, counts, times and codes, never audio or transcript text. Logs are text or JSON
(``STT_LOG_FORMAT``); JSON lines carry ``session_id`` and the session's ``trace_id``/``span_id``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanContext, Status, StatusCode

from . import __version__
from .config import TelemetrySettings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# (session id, the session span's context): what log lines emitted for a session carry
_log_context: contextvars.ContextVar[tuple[str, SpanContext | None] | None] = (
    contextvars.ContextVar("stt_log_context", default=None)
)


# --- logs -----------------------------------------------------------------------------------------
@contextmanager
def session_logging(session_id: str, span: Span | None = None) -> Iterator[None]:
    """Log lines inside carry ``session_id`` (and the session's trace ids)."""
    token = _log_context.set((session_id, span.get_span_context() if span is not None else None))
    try:
        yield
    finally:
        _log_context.reset(token)


def bind_session(session_id: str, span: Span | None = None) -> None:
    """For a task that serves one session for its whole life: its log lines carry the id."""
    _log_context.set((session_id, span.get_span_context() if span is not None else None))


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        bound = _log_context.get()
        record.session_id = bound[0] if bound else None
        ctx = bound[1] if bound else None
        if ctx is None or not ctx.is_valid:
            ctx = trace.get_current_span().get_span_context()
        valid = ctx.is_valid
        record.trace_id = format(ctx.trace_id, "032x") if valid else None
        record.span_id = format(ctx.span_id, "016x") if valid else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, session and trace ids."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("session_id", "trace_id", "span_id"):
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)


# --- providers ------------------------------------------------------------------------------------
def _otlp_configured() -> bool:
    return any(
        os.environ.get(v)
        for v in (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        )
    )


def build_providers(
    settings: TelemetrySettings,
) -> tuple[trace.TracerProvider, metrics.MeterProvider]:
    """The SDK providers ``serve`` uses, exporting as the settings and ``OTEL_*`` say."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES itself
    defaults = {"service.name": "stt-service", "service.version": __version__}
    if os.environ.get("OTEL_SERVICE_NAME"):
        del defaults["service.name"]
    resource = Resource.create(defaults)
    tracer_provider = TracerProvider(resource=resource)
    readers: list[MetricReader] = []
    if settings.hyperdx_enabled:
        assert settings.hyperdx_api_key is not None  # checked by Settings
        headers = {"authorization": settings.hyperdx_api_key.get_secret_value()}
        base = settings.hyperdx_endpoint.rstrip("/")
        tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers))
        )
        readers.append(
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers)
            )
        )
        log.info("OpenTelemetry: traces and metrics to HyperDX at %s", base)
    elif _otlp_configured():
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        log.info(
            "OpenTelemetry: traces and metrics over OTLP/HTTP to %s",
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        )
    else:
        log.info(
            "OpenTelemetry: on, but OTEL_EXPORTER_OTLP_ENDPOINT is not set and HyperDX is off: "
            "nothing is exported"
        )
    return tracer_provider, MeterProvider(resource=resource, metric_readers=readers)


# --- what the worker records ----------------------------------------------------------------------
class Telemetry:
    """Instruments and tracer for one worker. Without providers (``OTEL_ENABLED=false``) every
    call is a cheap no-op through the OpenTelemetry API's no-op implementations."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        backend: str = "",
    ) -> None:
        self.tracer_provider = tracer_provider or trace.NoOpTracerProvider()
        self.meter_provider = meter_provider or metrics.NoOpMeterProvider()
        self.enabled = tracer_provider is not None
        self.backend = backend
        self.tracer = self.tracer_provider.get_tracer("stt_service", __version__)
        m = self._meter = self.meter_provider.get_meter("stt_service", __version__)
        self.attrs = {"stt.backend": backend}
        self.active_sessions = m.create_up_down_counter(
            "stt.sessions.active", unit="{session}", description="sessions open on this worker"
        )
        # counted in plain numbers per chunk and read at each export: a Counter.add per chunk
        # was a tenth of the worker's time per chunk at its ceiling
        self.chunks_received = 0
        self.audio_received = 0.0
        self._gauges: list[Any] = []
        self.observe_total(
            "stt.chunks.received", "{chunk}", "audio chunks accepted", lambda: self.chunks_received
        )
        self.observe_total(
            "stt.audio.received", "s", "seconds of audio accepted", lambda: self.audio_received
        )
        self.latency = {
            name: m.create_histogram(
                f"stt.{name}.latency",
                unit="s",
                description=desc,
                explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
            )
            for name, desc in (
                ("final", "end of speech to the final transcript"),
                ("first_partial", "start of speech to the utterance's first partial"),
                ("interrupt", "speech onset while responding to the interrupt"),
                (
                    "turn_wait",
                    "silence (audio time) from the last voice to the end of the turn: the "
                    "end-of-turn model's pause, or STT_TURN_MAX_PAUSE where it heard no end",
                ),
            )
        }
        self.backend_errors = m.create_counter(
            "stt.backend.errors", unit="{error}", description="recognizer errors, by code"
        )
        self.refused = m.create_counter(
            "stt.messages.refused",
            unit="{message}",
            description="inbound messages refused with an error, by code",
        )
        self.dropped = m.create_counter(
            "stt.messages.dropped",
            unit="{message}",
            description="outbound messages that could not be published",
        )
        self.interrupts = m.create_counter(
            "stt.interrupts",
            unit="{interrupt}",
            description="barge-in interrupts published (stt.event=interrupt) and taken back "
            "(stt.event=cancelled, stt.reason=no_words or backchannel)",
        )
        # Silero's network calls in the voice batcher, read at export (plain totals): frames over
        # calls is the mean batch size
        self.vad_frames = 0
        self.vad_calls = 0
        self.observe_total(
            "stt.vad.frames",
            "{frame}",
            "32 ms frames Silero's network ran on",
            lambda: self.vad_frames,
        )
        self.observe_total(
            "stt.vad.calls",
            "{call}",
            "calls of Silero's network (one for many sessions' frames)",
            lambda: self.vad_calls,
        )
        # echo cancellation (sessions that send ``playback``), read at export (plain totals)
        self.playback_received = 0.0
        self.echo_suppressed = 0
        self.observe_total(
            "stt.playback.received",
            "s",
            "seconds of the agent's playback received as the echo reference",
            lambda: self.playback_received,
        )
        self.observe_total(
            "stt.echo.suppressed",
            "{frame}",
            "32 ms frames the voice detector called speech that the agent's playback explained "
            "(residual echo): neither barge-in nor a transcript",
            lambda: self.echo_suppressed,
        )
        self.resumed = m.create_counter(
            "stt.sessions.resumed",
            unit="{session}",
            description="sessions taken over from another replica and replayed (jetstream mode)",
        )

    def observe(
        self, name: str, unit: str, description: str, read: Callable[[], float | None]
    ) -> None:
        """A gauge read at each export (e.g. inference queue depth)."""

        def callback(_: CallbackOptions) -> Iterable[Observation]:
            value = read()
            return [] if value is None else [Observation(value, self.attrs)]

        self._gauges.append(
            self._meter.create_observable_gauge(
                name, [callback], unit=unit, description=description
            )
        )

    def observe_total(
        self, name: str, unit: str, description: str, read: Callable[[], float]
    ) -> None:
        """A counter kept as a plain total elsewhere (e.g. the backend's stalls), read at export."""
        self._gauges.append(
            self._meter.create_observable_counter(
                name,
                [lambda _: [Observation(read(), self.attrs)]],
                unit=unit,
                description=description,
            )
        )

    def count_published(self, message: dict[str, Any]) -> None:
        """Count a session's result that has a metric of its own (interrupts, taken back or not)."""
        kind = message.get("type")
        if kind == "interrupt":
            self.interrupts.add(1, {**self.attrs, "stt.event": "interrupt"})
        elif kind == "interrupt_cancelled":
            reason = str(message.get("reason"))
            self.interrupts.add(1, {**self.attrs, "stt.event": "cancelled", "stt.reason": reason})

    def record_latency(self, name: str, seconds: float) -> None:
        hist = self.latency.get(name)
        if hist is not None:
            hist.record(seconds, self.attrs)

    def session(self, session_id: str) -> SessionTrace:
        self.active_sessions.add(1, self.attrs)
        return SessionTrace(self, session_id)

    def shutdown(self) -> None:
        """Export what is pending (spans of sessions closed in the drain included)."""
        for provider in (self.tracer_provider, self.meter_provider):
            shutdown = getattr(provider, "shutdown", None)
            if shutdown is not None:
                try:
                    shutdown()
                except Exception as exc:  # an unreachable collector must not fail the exit
                    log.warning("OpenTelemetry shutdown: %s", exc)


class SessionTrace:
    """The spans of one session: ``stt.session``, and per utterance (or turn) ``stt.utterance``
    with ``stt.decode`` and ``stt.publish`` under it."""

    def __init__(self, tel: Telemetry, session_id: str) -> None:
        self.tel = tel
        self.span = tel.tracer.start_span(
            "stt.session",
            attributes={"stt.session_id": session_id, "stt.backend": tel.backend},
        )
        self._ctx = trace.set_span_in_context(self.span)
        self._utterances: dict[int, Span] = {}
        # turn -> when its audio was last flushed (time.time_ns()): its stt.decode starts there
        self._flushed: dict[int, int] = {}
        # utterance -> its turn, for the stretches of a turn that went on after a pause: the
        # session forgets it once the turn's final is joined, before the final's latency is told
        self._turns: dict[int, int] = {}
        # latencies told before their span began (e.g. a first partial's), set when it begins
        self._pending: dict[int, dict[str, float]] = {}

    def utterance(self, index: int, stretch: int | None = None) -> Span:
        """The span of utterance or turn ``index`` (``stretch``: the utterance of that turn the
        audio is of)."""
        if stretch is not None:
            self._turns[stretch] = index
        span = self._utterances.get(index)
        if span is None:
            span = self.tel.tracer.start_span(
                "stt.utterance", context=self._ctx, attributes={"stt.utterance": index}
            )
            self._utterances[index] = span
            pending = self._pending.pop(index, None)
            if pending:
                span.set_attributes(pending)
        return span

    def flushed(self, index: int, stretch: int | None = None) -> None:
        """The audio of utterance or turn ``index`` is complete (so far: a turn that goes on after
        a pause flushes each stretch): the recognizer works on its final from the last flush."""
        self.utterance(index, stretch)
        self._flushed[index] = time.time_ns()

    def measured(self, name: str, seconds: float, index: int) -> None:
        """A latency of utterance (or stretch, or turn) ``index``; of the session when -1."""
        self.tel.record_latency(name, seconds)
        key, value = f"stt.{name}_latency_ms", round(seconds * 1000, 1)
        if index < 0:
            self.span.set_attribute(key, value)
            return
        index = self._turns.get(index, index)
        span = self._utterances.get(index)
        if span is not None:
            span.set_attribute(key, value)
        else:
            self._pending.setdefault(index, {})[key] = value

    def _decode(self, index: int, parent: Span) -> Span | None:
        """The turn's ``stt.decode`` span, from its last flush (None: it was not flushed)."""
        start = self._flushed.pop(index, None)
        if start is None:
            return None
        return self.tel.tracer.start_span(
            "stt.decode", context=trace.set_span_in_context(parent), start_time=start
        )

    @contextmanager
    def publishing(self, message: dict[str, Any]) -> Iterator[None]:
        """Around the publish of one outbound message: a final gets a ``stt.publish`` span and
        ends its utterance; partials, interrupts and errors become events."""
        kind = message.get("type")
        if kind != "transcript":
            attrs = {"stt.code": str(message.get("code"))} if kind == "error" else {}
            self.span.add_event(str(kind), attrs)
            if kind == "error":
                self.span.set_status(Status(StatusCode.ERROR, str(message.get("code"))))
            yield
            return
        index = int(message.get("turn_index", 0))
        utt = self.utterance(index)
        if not message.get("is_final"):
            utt.add_event("partial", {"stt.sequence": int(message["sequence"])})
            yield
            return
        decode = self._decode(index, utt)
        if decode is not None:  # the final is here: decoding is over, publishing begins
            decode.end()
        parent = trace.set_span_in_context(utt)
        with self.tel.tracer.start_as_current_span("stt.publish", context=parent):
            yield
        utt.set_attributes(
            {
                "stt.sequence": int(message["sequence"]),
                "stt.audio_start": float(message.get("audio_start", 0.0)),
                "stt.audio_end": float(message.get("audio_end", 0.0)),
                "stt.words": len(str(message.get("transcript", "")).split()),
            }
        )
        if message.get("confidence") is not None:
            utt.set_attribute("stt.confidence", float(message["confidence"]))
        utt.end()
        del self._utterances[index]
        for stretch in [u for u, turn in self._turns.items() if turn == index]:
            del self._turns[stretch]

    def echo(self, playback_s: float, suppressed_frames: int) -> None:
        """The session sent the agent's playback: echo cancellation ran."""
        self.span.set_attributes(
            {
                "stt.echo_cancelled": True,
                "stt.playback_seconds": round(playback_s, 3),
                "stt.echo_suppressed_frames": suppressed_frames,
            }
        )

    def close(self, reason: str, audio_s: float, transcripts: int, interrupts: int) -> None:
        decodes = [self._decode(i, span) for i, span in self._utterances.items()]
        for span in [*(d for d in decodes if d is not None), *self._utterances.values()]:
            span.set_attribute("stt.unfinished", True)
            span.end()
        self._flushed.clear()
        self._utterances.clear()
        self._turns.clear()
        self._pending.clear()
        self.span.set_attributes(
            {
                "stt.close_reason": reason,
                "stt.audio_seconds": round(audio_s, 3),
                "stt.transcripts": transcripts,
                "stt.interrupts": interrupts,
            }
        )
        self.span.end()
        self.tel.active_sessions.add(-1, self.tel.attrs)
