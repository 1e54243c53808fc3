"""OpenTelemetry after real sessions (real nats-server, worker, tiny.en, speech), read back through
the SDK's in-memory exporters: the spans and metrics an operator's dashboards rely on, with the
right attributes, and JSON logs that carry session and trace ids but never transcript text."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stt_service.bus.embedded import EmbeddedNats, free_port
from stt_service.commands.client import normalize_text
from stt_service.telemetry import Telemetry, setup_logging

from .conftest import running_service
from .speech import joined, pcm16, silence, utterance
from .test_turns import paused

pytestmark = pytest.mark.slow


class Recorded:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer_provider = tracer_provider

    def telemetry(self, backend: str) -> Telemetry:
        return Telemetry(self.tracer_provider, self.meter_provider, backend=backend)

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        """name -> data points, from one collection."""
        out: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out.setdefault(metric.name, []).extend(metric.data.data_points)
        return out


def traced_service(url: str, rec: Recorded, **overrides: Any) -> Any:
    return running_service(url, rec.telemetry, **overrides)


@contextlib.contextmanager
def json_logs() -> Iterator[io.StringIO]:
    """The service's JSON log format at INFO, captured."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    setup_logging("INFO", "json")
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


async def test_spans_metrics_and_logs_of_a_real_session(nats_server: EmbeddedNats) -> None:
    rec = Recorded()
    u = utterance("0880")
    audio = pcm16(np.concatenate([silence(0.3), u.samples, silence(1.0), u.samples, silence(1.0)]))
    with json_logs() as logs:
        # the fragment "He was not an ill-disposed young man," twice, 1 s apart: the end-of-turn
        # model would join them into one turn; with its wait cut to the hangover, two finals
        async with traced_service(nats_server.url, rec, stt_turn_max_pause=0.8) as h:
            # responding: the first sentence barges in; two sentences, two finals
            res = await h.stream("otel-1", audio, speed=2.0, state="responding")
            await h.publish("otel-bad", b"\xc1 not msgpack")
            await h.wait_for(lambda: bool(h.results("otel-bad").errors))
            gauges = rec.metrics()  # read while the worker runs: queue depth, audio backlog
    assert len(res.finals) == 2 and len(res.interrupts) == 1, res.messages

    # --- traces: one per session, a span per utterance with decode and publish under it
    (session,) = rec.finished("stt.session")
    assert session.attributes is not None
    assert session.attributes["stt.session_id"] == "otel-1"
    assert session.attributes["stt.backend"] == "whisper"
    assert session.attributes["stt.transcripts"] == len(res.of_type("transcript"))
    assert session.attributes["stt.interrupts"] == 1
    assert session.attributes["stt.close_reason"] == "end"
    assert abs(float(session.attributes["stt.audio_seconds"]) - audio.duration) < 0.1
    assert "interrupt" in [e.name for e in session.events]
    assert float(session.attributes["stt.interrupt_latency_ms"]) > 0  # a session-level measure
    trace_id = session.context.trace_id
    utterances = rec.finished("stt.utterance")
    assert len(utterances) == 2
    for span, final in zip(utterances, res.finals, strict=True):
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == session.context.span_id
        attrs = span.attributes
        assert attrs is not None
        assert attrs["stt.sequence"] == final["sequence"]
        assert attrs["stt.audio_end"] == final["audio_end"]
        assert float(attrs["stt.final_latency_ms"]) > 0
        children = {
            s.name: s
            for s in rec.spans.get_finished_spans()
            if s.parent is not None and s.parent.span_id == span.context.span_id
        }
        assert set(children) == {"stt.decode", "stt.publish"}
        assert children["stt.decode"].end_time <= children["stt.publish"].end_time  # type: ignore[operator]
    # no span attribute or event holds the words
    for span in rec.spans.get_finished_spans():
        values = [*(span.attributes or {}).values()]
        values += [v for e in span.events for v in (e.attributes or {}).values()]
        assert not any(isinstance(v, str) and "young man" in v.lower() for v in values)

    # --- metrics
    m = rec.metrics()
    (chunks,) = m["stt.chunks.received"]
    assert chunks.value == len(audio.pcm) // 3200 + (len(audio.pcm) % 3200 > 0)  # 100 ms chunks
    assert chunks.attributes == {"stt.backend": "whisper"}
    (seconds,) = m["stt.audio.received"]
    assert abs(seconds.value - audio.duration) < 0.05
    (final_latency,) = m["stt.final.latency"]
    # from the last voiced frame: at 2x, the eager pause and its quiet are 0.2 s of the clock,
    # less the time a sample waits in its 100 ms (50 ms at 2x) chunk
    assert final_latency.count == 2 and 0.1 < final_latency.sum / 2 < 5.0
    (first_partial,) = m["stt.first_partial.latency"]
    assert first_partial.count == 2
    (interrupt,) = m["stt.interrupt.latency"]
    # 150 ms of speech streamed at 2x real time (in 100 ms chunks), then the interrupt: it waited
    # for at least one later chunk, and far less than a second
    assert interrupt.count == 1 and 0.03 < interrupt.sum < 1.0
    (active,) = m["stt.sessions.active"]
    assert active.value == 0  # opened and closed
    (interrupts,) = m["stt.interrupts"]  # a real barge-in: published, not taken back
    assert interrupts.value == 1 and interrupts.attributes["stt.event"] == "interrupt"
    (vad_frames,), (vad_calls,) = m["stt.vad.frames"], m["stt.vad.calls"]
    assert vad_frames.value >= vad_calls.value > 0  # Silero ran, some frames batched
    (stalls,) = m["stt.backend.stalls"]
    assert stalls.value == 0  # local Whisper has no stream to stall
    refused = {p.attributes["stt.code"]: p.value for p in m["stt.messages.refused"]}
    assert refused == {"invalid_msgpack": 1}
    (depth,) = gauges["stt.inference.queue_depth"]
    (backlog,) = gauges["stt.audio.backlog"]
    assert depth.value == 0 and backlog.value == 0  # idle again after the session

    # --- logs: JSON, session lines carry the session and its trace; no words at INFO
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    mine = [x for x in lines if x.get("session_id") == "otel-1"]
    assert any("opened" in x["message"] for x in mine)
    assert any("closed" in x["message"] for x in mine)
    untraced = [x["message"] for x in mine if "trace_id" not in x]
    assert not untraced, untraced  # every line of the session, its first ("opened") too
    assert {x["trace_id"] for x in mine} == {format(trace_id, "032x")}
    text = logs.getvalue().lower()
    for final in res.finals:
        assert normalize_text(final["transcript"]) not in normalize_text(text)
    assert "young man" not in text


async def test_a_turn_that_goes_on_after_a_pause_has_its_latencies_and_a_short_decode(
    nats_server: EmbeddedNats,
) -> None:
    """ "Had he married a more amiable [1.2 s] woman, he might ...": the end-of-turn model keeps
    the turn open through the pause (longer than STT_CHUNK_TIMEOUT), so the rest is a second
    stretch of the same turn. Its ``stt.utterance`` span has the turn's latencies (measured on
    the last stretch), and its ``stt.decode`` counts from the turn's last flush, not the first."""
    rec = Recorded()
    speed = 2.0
    x, resume = paused("0920", "amiable", 1.2)
    async with traced_service(nats_server.url, rec) as h:
        res = await h.stream("otel-pause", pcm16(x), speed=speed)
    (final,) = res.finals
    text = normalize_text(final["transcript"])
    assert "amiable" in text and "respectable" in text, text

    (session,) = rec.finished("stt.session")
    (span,) = [
        s
        for s in rec.finished("stt.utterance")
        if (s.attributes or {}).get("stt.utterance") == final["turn_index"]
    ]
    attrs = span.attributes
    assert attrs is not None and not attrs.get("stt.unfinished")
    assert attrs["stt.sequence"] == final["sequence"]
    final_latency = float(attrs["stt.final_latency_ms"]) / 1000
    assert final_latency > 0
    assert float(attrs["stt.turn_wait_latency_ms"]) > 0
    (decode,) = [
        s
        for s in rec.finished("stt.decode")
        if s.parent is not None and s.parent.span_id == span.context.span_id
    ]
    assert decode.start_time is not None and decode.end_time is not None
    assert span.start_time is not None and span.end_time is not None
    assert session.start_time is not None
    decode_s = (decode.end_time - decode.start_time) / 1e9
    # from the end of the turn's last stretch: it began after the speech after the pause was sent,
    # and is part of the wait from the end of speech to the final
    assert (decode.start_time - session.start_time) / 1e9 > resume / speed
    assert decode_s < final_latency, (decode_s, final_latency)
    assert decode_s < (span.end_time - span.start_time) / 1e9


async def test_backend_errors_are_counted_by_code(nats_server: EmbeddedNats) -> None:
    """A Whisper server that is down: the session gets ``backend_error``, the metric counts it."""
    rec = Recorded()
    dead = f"http://127.0.0.1:{free_port()}"
    async with traced_service(
        nats_server.url,
        rec,
        stt_backend="whisper-http",
        whisper_url=dead,
        whisper_http_retries=0,
        stt_partial_interval=0.0,
    ) as h:
        res = await h.stream("down-1", joined([utterance("0880")]), speed=0)
    assert [e["code"] for e in res.errors] == ["backend_error"]
    errors = rec.metrics()["stt.backend.errors"]
    assert [(p.attributes["stt.code"], p.value) for p in errors] == [("backend_error", 1)]
    assert errors[0].attributes["stt.backend"] == "whisper-http"
    (session,) = rec.finished("stt.session")
    assert session.status.status_code.name == "ERROR"


async def test_every_error_a_client_gets_is_an_event_on_its_sessions_span(
    nats_server: EmbeddedNats,
) -> None:
    """A bad message inside an open session, and the drain that closes it: both errors the
    client receives are events on the session's span (the drain's was published around it)."""
    rec = Recorded()
    u = utterance("0870")
    async with traced_service(nats_server.url, rec) as h:
        await h.stream("drained-1", joined([u]), speed=2.0, wait=False, send_end=False)
        await h.publish("drained-1", {"type": "chunk", "audio_b64": "%%%"})
        await h.wait_for(lambda: bool(h.results("drained-1").errors))
        await h.worker.drain()
        await h.wait_for(lambda: len(h.results("drained-1").errors) == 2)
    codes = [e["code"] for e in h.results("drained-1").errors]
    assert codes == ["invalid_audio", "service_draining"]
    (session,) = rec.finished("stt.session")
    events = [(e.name, (e.attributes or {}).get("stt.code")) for e in session.events]
    assert [e for e in events if e[0] == "error"] == [
        ("error", "invalid_audio"),
        ("error", "service_draining"),
    ]
    assert session.attributes is not None and session.attributes["stt.close_reason"] == "drain"
