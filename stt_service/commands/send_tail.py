"""``stt-service send`` and ``tail``: talk to a running service over NATS.

``send`` streams a WAV file (or the microphone, :mod:`.mic`) as one or more sessions and prints
their results and a summary; ``tail`` prints the results published for one or all sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..audio import read_wav
from ..bus.natsconn import connect_nats
from ..config.nats import redact_url
from .client import ResultCollector, SessionResults, StreamTiming, format_message, stream_audio
from .common import _nats_url, _settings


# --- send -----------------------------------------------------------------------------------------
def cmd_send(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    if bool(args.file) == bool(args.mic):
        print("stt-service send: give a WAV file or --mic (one of them)", file=sys.stderr)
        return 2
    mic = None
    audio = None
    try:
        args.playback_audio = None if args.playback is None else read_wav(args.playback)
        if args.playback_audio is not None and args.playback_audio.channels != 1:
            raise ValueError(f"{args.playback}: the playback must be mono")
        if args.mic:
            from .mic import Microphone

            mic = Microphone(args.device, args.chunk_ms)
        else:
            audio = read_wav(args.file)
    except (OSError, ValueError, RuntimeError) as exc:  # MicrophoneError: one line
        print(f"stt-service send: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_send(args, audio, mic))
    except KeyboardInterrupt:
        return 130


async def _send(args: argparse.Namespace, audio: Any, mic: Any = None) -> int:
    url = _nats_url(args)
    try:  # the service's own connect: credentials and TLS from the environment, one-line errors
        nc = await connect_nats(_settings(args).nats, url=url, name="stt-service-send")
    except RuntimeError as exc:
        print(f"stt-service send: {exc}", file=sys.stderr)
        return 1
    prefix = args.session_prefix or f"{'mic' if mic else 'send'}-{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}-{i + 1}" for i in range(1 if mic else args.sessions)]
    label = {sid: f"[{sid[len(prefix) + 1 :] if args.sessions > 1 else sid}]" for sid in ids}
    timings: dict[str, StreamTiming] = {}
    latencies: dict[str, list[float]] = {sid: [] for sid in ids}

    def show(res: SessionResults, m: dict[str, Any]) -> None:
        latency = None
        t = timings.get(res.session_id)
        if m.get("is_final") and t is not None and m.get("audio_end") is not None:
            sent = t.sent_at(float(m["audio_end"]))
            if sent is not None:
                latency = (res.arrivals[-1] - sent) * 1000
                latencies[res.session_id].append(latency)
        if m.get("is_partial") and args.quiet_partials:
            return
        print(
            f"{label.get(res.session_id, res.session_id)} {format_message(m, latency)}", flush=True
        )

    collector = ResultCollector(nc, args.output_subject, show)
    await collector.start("*")
    duration = args.duration
    if mic is not None:
        total = duration or float("inf")
        print(
            f"listening to {mic.name} ({mic.rate} Hz) as session {ids[0]} on {redact_url(url)}; "
            "speak, and Ctrl-C to end the session",
            flush=True,
        )
    else:
        total = duration or (float("inf") if args.loop else audio.duration)
        print(
            f"sending {Path(args.file).name} ({audio.duration:.1f} s, {audio.sample_rate} Hz, "
            f"{audio.channels} ch) to {args.sessions} session(s) on {redact_url(url)}, "
            f"{args.chunk_ms} ms chunks at {args.speed:g}x",
            flush=True,
        )
    last_report = [time.monotonic()]

    def progress(sent_s: float) -> None:
        now = time.monotonic()
        if now - last_report[0] >= 5:
            last_report[0] = now
            finals = sum(len(collector.results(s).finals) for s in ids)
            print(
                f"… {sent_s:.0f}{'' if total == float('inf') else f'/{total:.0f}'} s sent per "
                f"session, {finals} final(s) so far",
                flush=True,
            )

    stop = asyncio.Event()  # Ctrl-C ends the microphone's session; a second one, everything

    def interrupted() -> None:
        print("\nending the session (its last final follows; Ctrl-C again to quit now)")
        stop.set()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    async def one(i: int, sid: str) -> None:
        timings[sid] = StreamTiming()
        if mic is not None:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted)
            await mic.stream(
                nc,
                sid,
                input_subject=args.input_subject,
                stop=stop,
                state=args.state,
                duration=duration,
                timing=timings[sid],
                progress=progress,
            )
            return
        await stream_audio(
            nc,
            sid,
            audio,
            input_subject=args.input_subject,
            chunk_ms=args.chunk_ms,
            speed=args.speed,
            state=args.state,
            loop=args.loop,
            duration=duration,
            progress=progress if i == 0 else None,
            timing=timings[sid],
            playback=args.playback_audio,
        )

    tasks = [one(i, sid) for i, sid in enumerate(ids)]
    t0 = time.monotonic()
    try:
        await asyncio.gather(*tasks)
        # results for the end of the audio: wait until every session went quiet
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            last = max(
                (r.arrivals[-1] for r in collector.sessions.values() if r.arrivals), default=0
            )
            if last and time.monotonic() - last > 4.0:
                break
    except asyncio.CancelledError:
        pass
    finally:
        await nc.close()
    print(f"\nsummary ({time.monotonic() - t0:.1f} s):")
    print(
        f"{'session':<24} {'finals':>6} {'partials':>8} {'interrupts':>10} {'taken back':>10} "
        f"{'errors':>6} {'final latency p50':>18}"
    )
    bad = 0
    for sid in ids:
        r = collector.results(sid)
        lat = sorted(latencies[sid])
        p50 = f"{lat[len(lat) // 2]:.0f} ms" if lat else "-"
        bad += len(r.errors)
        print(
            f"{sid:<24} {len(r.finals):>6} {len(r.partials):>8} {len(r.interrupts):>10} "
            f"{len(r.cancelled_interrupts):>10} {len(r.errors):>6} {p50:>18}"
        )
    return 1 if bad else 0


# --- tail -----------------------------------------------------------------------------------------
def cmd_tail(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 0


async def _tail(args: argparse.Namespace) -> int:
    url = _nats_url(args)
    try:
        nc = await connect_nats(_settings(args).nats, url=url, name="stt-service-tail")
    except RuntimeError as exc:
        print(f"stt-service tail: {exc}", file=sys.stderr)
        return 1
    count = [0]
    done = asyncio.Event()

    def show(res: SessionResults, m: dict[str, Any]) -> None:
        if args.finals and m.get("is_partial"):
            return
        count[0] += 1
        if args.json:
            print(json.dumps({"session": res.session_id, **m}, default=repr), flush=True)
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(m.get("timestamp", time.time())))
            print(f"{stamp} [{res.session_id}] {format_message(m)}", flush=True)
        if args.count and count[0] >= args.count:
            done.set()

    session = args.session or "*"
    await ResultCollector(nc, args.output_subject, show).start(session)
    print(
        f"tailing {args.output_subject}.{session} on {redact_url(url)} (Ctrl+C to stop)",
        file=sys.stderr,
        flush=True,
    )
    try:
        if args.duration:
            await asyncio.wait_for(done.wait(), args.duration)
        else:
            await done.wait()
    except TimeoutError:
        pass
    finally:
        await nc.close()
    return 0
