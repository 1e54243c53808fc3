"""The message-path bench's child processes (``bench/msgpath.py --role ROLE``): the bare
subscriber, the blaster that floods it (or the worker), the real-time publisher of sessions, and
the SageMaker emulator serving the Flux emulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from bench.children import emit  # noqa: E402
from bench.common import pct_ms, self_cpu_seconds  # noqa: E402

RATE = 16000
CHUNK_S = 0.1
REARM_CHUNKS = 10  # --state responding: a state_change to responding every second
REARM = msgpack.packb({"type": "state_change", "state": "responding"})
CHUNK_BYTES = int(RATE * CHUNK_S) * 2
INPUT = "ai.voice.stream"
OUTPUT = "ai.voice.transcription"
ACK_SUBJECT = "bench.msgpath.ack"
ACK_EVERY = 500  # the bare subscriber acknowledges every this many decoded messages
BLAST_WINDOW = 5000  # messages the blaster may have in flight beyond the last acknowledgement
BLAST_SUBJECTS = 1000


def chunk_message(audio: bytes) -> bytes:
    """A chunk exactly as :func:`stt_service.commands.client.stream_audio` packs it."""
    msg = {"type": "chunk", "timestamp": time.time(), "audio": audio}
    return msgpack.packb(msg, use_bin_type=True)


def speech_chunks() -> list[bytes]:
    """The five LibriVox utterances with 1.5 s of silence after each, in 100 ms chunks."""
    import numpy as np

    from bench.speech import utterances

    parts: list[Any] = [np.zeros(RATE // 2, dtype=np.int16)]
    for u in utterances():
        parts += [u.samples, np.zeros(int(1.5 * RATE), dtype=np.int16)]
    pcm = np.concatenate(parts).astype("<i2").tobytes()
    pcm += bytes(-len(pcm) % CHUNK_BYTES)
    return [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]


# --- child roles ----------------------------------------------------------------------------------
async def role_bare_sub(args: argparse.Namespace) -> None:
    """Baseline (a): decode every chunk message and nothing else; count what was decoded."""
    nc = await nats.connect(args.url)
    decoded = 0
    chunks = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal decoded, chunks
        obj = msgpack.unpackb(msg.data, raw=False)
        decoded += 1
        if obj.get("type") == "chunk" and len(obj["audio"]) == CHUNK_BYTES:
            chunks += 1
        if decoded % ACK_EVERY == 0:
            await nc.publish(ACK_SUBJECT, str(decoded).encode())

    await nc.subscribe(f"{INPUT}.*", cb=on_msg)
    await nc.flush()
    emit("READY", {})
    while decoded == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(args.warmup)
    n0, c0, t0, cpu0 = decoded, chunks, time.monotonic(), self_cpu_seconds()
    await asyncio.sleep(args.duration)
    n1, c1, t1, cpu1 = decoded, chunks, time.monotonic(), self_cpu_seconds()
    await nc.publish(ACK_SUBJECT, b"stop")
    await nc.flush()
    await nc.close()
    window, cpu = t1 - t0, cpu1 - cpu0
    emit(
        "RESULT",
        {
            "decoded": n1 - n0,
            "chunks": c1 - c0,
            "window_s": round(window, 3),
            "msgs_per_s": round((n1 - n0) / window),
            "cpu_cores": round(cpu / window, 3),
            "msgs_per_cpu_s": round((n1 - n0) / cpu) if cpu else None,
        },
    )


async def role_blast(args: argparse.Namespace) -> None:
    """Chunk messages as fast as the receiver acknowledges them, at most a window ahead.

    Without ``--probe`` the receiver is the bare subscriber (it publishes its count). With
    ``--probe`` it is the worker: the sessions are started first, and after every ``ACK_EVERY``
    chunks comes an ``end`` for a session that was never started (``probe-K``), which the worker
    answers with an ``unknown_session`` error once it has handled everything before it (one
    subscription, in order). The blaster then measures the worker's rate itself."""
    nc = await nats.connect(args.url)
    chunks = speech_chunks()
    count = args.total or BLAST_SUBJECTS
    prefix = "sat" if args.probe else "blast"
    subjects = [f"{INPUT}.{prefix}-{i}" for i in range(count)]
    acked = 0
    stop = False
    progress = asyncio.Event()

    async def on_ack(msg: Msg) -> None:
        nonlocal acked, stop
        if msg.data == b"stop":
            stop = True
        elif args.probe:
            if ".probe-" not in msg.subject:
                return  # the sessions' own results
            acked = max(acked, int(msg.subject.rsplit("-", 1)[1]) * ACK_EVERY)
        else:
            acked = max(acked, int(msg.data))
        progress.set()

    await nc.subscribe(f"{OUTPUT}.*" if args.probe else ACK_SUBJECT, cb=on_ack)
    await nc.flush()
    if args.probe:
        for i, subject in enumerate(subjects):
            begin = {"type": "start", "session_id": f"{prefix}-{i}", "sample_rate": RATE}
            await nc.publish(subject, msgpack.packb(begin))
    window: dict[str, Any] = {}

    async def measure() -> None:
        nonlocal stop
        while acked == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(args.warmup)
        a0, t0, cpu0 = acked, time.monotonic(), self_cpu_seconds()
        await asyncio.sleep(args.duration)
        a1, t1, cpu1 = acked, time.monotonic(), self_cpu_seconds()
        stop = True
        window.update(
            handled=a1 - a0,
            window_s=round(t1 - t0, 3),
            msgs_per_s=round((a1 - a0) / (t1 - t0)),
            blaster_cpu_cores=round((cpu1 - cpu0) / (t1 - t0), 3),
        )

    measuring = asyncio.create_task(measure()) if args.probe else None
    sent = 0
    waits = 0
    cpu0, t0 = self_cpu_seconds(), time.monotonic()
    deadline = t0 + args.duration + (30 if not args.probe else 60)
    while not stop and time.monotonic() < deadline:
        if sent - acked >= BLAST_WINDOW:
            progress.clear()
            waits += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), 1.0)
            continue
        await nc.publish(subjects[sent % count], chunk_message(chunks[sent % len(chunks)]))
        sent += 1
        if args.probe and sent % ACK_EVERY == 0:
            await nc.publish(f"{INPUT}.probe-{sent // ACK_EVERY}", msgpack.packb({"type": "end"}))
        if sent % 200 == 0:
            await asyncio.sleep(0)  # let the flusher and the acknowledgements in
    if args.probe:
        for subject in subjects:
            await nc.publish(subject, msgpack.packb({"type": "end"}))
    await nc.flush()
    elapsed = time.monotonic() - t0
    if measuring is not None:
        measuring.cancel()
    await nc.close()
    emit(
        "RESULT",
        {
            "sent": sent,
            "probes": sent // ACK_EVERY if args.probe else 0,
            "window_waits": waits,
            "sent_per_s": round(sent / elapsed),
            "cpu_cores": round((self_cpu_seconds() - cpu0) / elapsed, 3),
            **window,
        },
    )


async def role_publish(args: argparse.Namespace) -> None:
    """Real-time sessions ``first .. first+sessions-1`` of ``total``, on the shared clock."""
    nc = await nats.connect(args.url)
    chunks = speech_chunks()
    ids = [f"mp{args.total}-{i}" for i in range(args.first, args.first + args.sessions)]
    subjects = [f"{INPUT}.{sid}" for sid in ids]
    offsets = [(i * 37) % len(chunks) for i in range(args.first, args.first + args.sessions)]
    per_session = round(args.duration / CHUNK_S)
    period = CHUNK_S / args.speed
    # session i of N sends at phase i/N of each chunk period (so the chunks of all sessions
    # are spread evenly over every period) and starts in period floor(ramp/period * i/N), so
    # the starts spread over the ramp; its chunk k is due k periods after its start
    ramp = max(args.ramp, CHUNK_S) / args.speed
    start = time.monotonic() + (args.t0 - time.time())
    n = args.sessions
    total = n * per_session

    def first_due(i: int) -> float:
        share = i / args.total
        return (share + int(share * ramp / period)) * period

    schedule = sorted(
        (first_due(args.first + s) + k * period, k, s) for s in range(n) for k in range(per_session)
    )
    lags: list[float] = []
    messages = 0
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    cpu0, t0 = self_cpu_seconds(), time.monotonic()
    j = 0
    while j < total:
        now = time.monotonic()
        due = now
        while j < total:
            at, k, s = schedule[j]
            due = start + at
            if due > now:
                break
            if k == 0:
                begin = {
                    "type": "start",
                    "session_id": ids[s],
                    "sample_rate": RATE,
                    "channels": 1,
                    "state": args.state,
                }
                await nc.publish(subjects[s], msgpack.packb(begin))
                messages += 1
            elif args.state == "responding" and k % REARM_CHUNKS == 0:
                # the assistant speaks again: barge-in (the voice detector) is armed anew after
                # each interrupt, so it runs on (nearly) every frame of every session
                await nc.publish(subjects[s], REARM)
                messages += 1
            audio = chunks[(offsets[s] + k) % len(chunks)]
            await nc.publish(subjects[s], chunk_message(audio))
            lags.append(time.monotonic() - due)
            messages += 1
            if k == per_session - 1:
                await nc.publish(subjects[s], msgpack.packb({"type": "end"}))
                messages += 1
            j += 1
        if j < total:
            await asyncio.sleep(max(0.001, due - time.monotonic()))
    await nc.flush()
    elapsed = time.monotonic() - t0
    cpu = self_cpu_seconds() - cpu0
    await nc.close()
    emit(
        "RESULT",
        {
            "sessions": n,
            "chunks": total,
            "messages": messages,
            "elapsed_s": round(elapsed, 3),
            "cpu_s": round(cpu, 3),
            "send_lag_ms": pct_ms(lags),
            "late_over_20ms": sum(1 for x in lags if x > 0.02),
        },
    )


async def role_emulator(args: argparse.Namespace) -> None:
    """The SageMaker + Flux emulator until SIGTERM; then how much audio reached the model."""
    if args.h2_streams:
        # hypercorn's defaults: 100 concurrent streams and 1000 requests per HTTP/2 connection
        from hypercorn.config import Config

        Config.h2_max_concurrent_streams = args.h2_streams
        Config.keep_alive_max_requests = max(Config.keep_alive_max_requests, 10 * args.h2_streams)
    from bench.speech import utterances
    from stt_service.emulator.sagemaker import SageMakerEmulator

    script = [u.reference.lower() for u in utterances()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with SageMakerEmulator(script=script) as emu:
        emit("READY", {"url": emu.url, "ca": emu.ca_path})
        await stop.wait()
        streams = emu.app.streams
        emit(
            "RESULT",
            {
                "requests": len(emu.app.requests),
                "streams": len(streams),
                "audio_bytes": sum(m.received_bytes for m in streams),
                "turns": sum(m.turns_done for m in streams),
            },
        )
