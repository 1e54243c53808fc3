"""What each SageMaker fault costs a Flux session: drive the real AWS SDK against the local
emulator with one injected fault per run and print what the session saw.

    uv run python bench/deepgram_faults.py

Per fault: the finals (each turn once?), errors, streams opened, audio bytes the model received
against the session's, and the session's wall time (against the fault-free run's: what the fault
cost; for a stall, about the watchdog's ``STT_STALL_TIMEOUT_S``) or the time to the error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.speech import joined, utterance
from stt_service.backends.base import RecognitionError, RecognitionEvent, StreamParams
from stt_service.backends.deepgram.flux import flux_backend
from stt_service.config import load_settings
from stt_service.emulator.sagemaker import Fault, SageMakerEmulator

SCRIPT = ["first turn", "second turn"]


async def run(name: str, faults: list[Fault], pace: float = 0.025, **settings: object) -> None:
    audio = joined([utterance("0880"), utterance("0930")], gap_s=1.5)
    samples = np.frombuffer(audio.pcm, dtype="<i2")
    async with SageMakerEmulator(
        script=SCRIPT, faults=faults, keep_audio=True, resume_script=True
    ) as emu:
        cfg = load_settings(
            stt_backend="flux",
            sagemaker_endpoint_name="bench",
            aws_endpoint_url_sagemaker_runtime_http2=emu.url,
            aws_ca_bundle=emu.ca_path,
            **settings,
        )
        backend = flux_backend(cfg)
        await backend.start()
        stream = backend.open_stream(StreamParams("bench"))
        finals: list[str] = []
        errors: list[str] = []
        first_error_at: float | None = None

        async def pump() -> None:
            nonlocal first_error_at
            async for ev in stream.events():
                if isinstance(ev, RecognitionError):
                    errors.append(f"{ev.code}: {ev.message[:70]}")
                    first_error_at = first_error_at or time.monotonic()
                elif isinstance(ev, RecognitionEvent) and ev.is_final:
                    finals.append(ev.text)

        reader = asyncio.create_task(pump())
        t0 = time.monotonic()
        step = 1600  # 100 ms, at 4x real time (pace 0.1: at real time)
        for i in range(0, samples.size, step):
            stream.send_audio(samples[i : i + step], i, 0)
            await asyncio.sleep(pace)
        await stream.aclose()
        await reader
        elapsed = time.monotonic() - t0
        received = sum(len(a) for a in emu.app.audio)
    to_error = f"{(first_error_at - t0) * 1000:.0f} ms" if first_error_at else "-"
    print(
        f"| {name} | {len(emu.app.requests)} | {' / '.join(finals) or '-'} | "
        f"{received / len(audio.pcm):.2f} | {elapsed:.2f} s | {to_error} | "
        f"{'; '.join(errors) or '-'} |"
    )


async def main() -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    logging.basicConfig(level=logging.ERROR)
    mid_second_turn = int((utterance("0880").samples.size / 16000 + 2.0) * 16000) * 2
    print(
        "| fault | requests | finals | bytes sent / session bytes | session wall time | "
        "first error after | errors |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    await run("none", [])
    await run("429 x3 at connect", [Fault(status=429, error_type="ThrottlingException")] * 3)
    await run("503 at connect", [Fault(status=503, error_type="ServiceUnavailable")])
    await run(
        "InternalStreamFailure mid-turn",
        [Fault(after_bytes=mid_second_turn, stream_error="InternalStreamFailure")],
    )
    await run("connection cut mid-turn", [Fault(after_bytes=mid_second_turn, stream_error="reset")])
    stall = [Fault(after_bytes=mid_second_turn, stream_error="stall")]
    await run("stream goes silent mid-turn (stall)", stall)
    await run("none, at real time", [], pace=0.1)
    await run("stall, at real time", list(stall), pace=0.1)
    await run(
        "ModelStreamError mid-turn",
        [Fault(after_bytes=mid_second_turn, stream_error="ModelStreamError")],
    )
    await run("400 ValidationError", [Fault(status=400, error_type="ValidationError")])
    await run("403 bad credentials", [Fault(status=403, error_type="UnrecognizedClientException")])
    await run("424 ModelError", [Fault(status=424, error_type="ModelError")])
    await run(
        "503 x10, DEEPGRAM_MAX_RETRIES=3",
        [Fault(status=503, error_type="ServiceUnavailable")] * 10,
        deepgram_max_retries=3,
    )


if __name__ == "__main__":
    asyncio.run(main())
