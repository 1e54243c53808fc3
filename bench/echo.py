"""Echo-aware barge-in: the agent's own voice through a loudspeaker, through the real worker.

    uv run python bench/echo.py                 # about 12 min on 2 cores
    uv run python bench/echo.py --quick         # fewer paths and trials (about 3 min)
    uv run --with matplotlib python bench/echo.py --chart-only   # results -> echo.png

Starts an embedded ``nats-server`` and the worker (``stt-service serve``, its own process, local
Whisper tiny.en, every default), then streams client sessions that start ``responding``, as if
the agent were speaking. The agent's speech (three voices: Debian's LibriVox reader and Asterisk's
telephone prompt voice, both recorded, and an espeak-ng male voice) goes through simulated echo
paths (``bench/echo_paths.py``: delay 20-400 ms, a decaying room, echo return loss 0-20 dB, a
clipping loudspeaker, room noise), and each session runs twice: **with the reference** (the
agent's speech sent as ``playback``, each 100 ms just before the microphone chunk recorded
while it played) and **without** (today's clients).

1. **echo alone**: the microphone hears only the echo and the room, at ``--speed`` x real time
   (the detector counts audio time): interrupts and non-empty finals per hour of echo. After an
   interrupt the client says ``responding`` again, as an agent that ignored it would.
2. **double talk**: a user (another voice than the agent's) barges in over the echo at user-to-
   echo ratios of +6, 0 and -6 dB (speech levels over their active frames), in real time: recall
   (an interrupt within 1.5 s of the onset), latency from sending the chunk that holds the onset
   to receiving the interrupt (p50/p95), interrupts before the onset (the echo's fault).
3. **WER in double talk**: the user is the LibriVox reader (five utterances with references) over
   the Asterisk voice's echo at 0 dB, against the same utterances with no echo at all; once with
   an agent that talks on over the user, once with one that stops ``STOP_S`` after the user's
   onset (an interrupt's latency plus the client's reaction), as agents do when interrupted.
4. **cost**: the canceller alone, in this process: CPU per session-second over 50 sessions'
   interleaved 100 ms chunks (the worker's CPU per session-second in phase 1 is printed too).

Results go to ``{out}/echo.json`` and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nats.aio.client import Client as NATS  # noqa: E402

from bench.common import pct_ms  # noqa: E402
from bench.echo_paths import EchoPath, mix, scaled_to  # noqa: E402
from bench.run import WorkerProcess  # noqa: E402
from bench.speech import speech_bounds, utterances  # noqa: E402
from bench.turns_voices import _synthesise  # noqa: E402
from stt_service.audio import WavAudio, read_wav  # noqa: E402
from stt_service.bus.embedded import EmbeddedNats  # noqa: E402
from stt_service.commands.client import (  # noqa: E402
    DEFAULT_INPUT,
    ResultCollector,
    SessionResults,
    StreamTiming,
    stream_audio,
    word_error_rate,
)

RATE = 16000
PROMPTS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
RECALL_S = 1.5
STOP_S = 0.5  # an interrupted agent stops playing this long after the user began (WER phase)
ROOM_DBFS = -60.0  # the room's noise under the echo
PATHS = [  # delay ms, ERL dB, RT60 s, loudspeaker clipping
    EchoPath(20, 0, 0.15),
    EchoPath(60, 12, 0.3, seed=1),
    EchoPath(120, 6, 0.2, clip=3, seed=2),
    EchoPath(200, 0, 0.4, clip=4, seed=3),
    EchoPath(250, 20, 0.2, seed=4),
    EchoPath(400, 6, 0.3, seed=5),
    EchoPath(300, 12, 0.5, clip=2, seed=6),
    EchoPath(90, 3, 0.1, clip=5, seed=7),
    EchoPath(40, 9, 0.25, seed=8),
    EchoPath(160, 15, 0.2, clip=3, seed=9),
    EchoPath(330, 3, 0.35, seed=10),
    EchoPath(100, 0, 0.5, clip=2, seed=11),
]  # 12 paths: about 10 minutes of echo alone
PROMPT_NAMES = (
    "vm-intro", "conf-getpin", "vm-options", "auth-thankyou", "vm-goodbye",
    "conf-onlyperson", "vm-youhave", "agent-pass",
)  # fmt: skip
ESPEAK_TEXT = (
    "Thanks for calling. I can help you change a booking, check the status of an order, or "
    "talk about your bill. Your order shipped yesterday and should arrive on Thursday. "
    "Is there anything else I can do for you today? I have also sent a summary by email."
)


def _prompt(name: str) -> np.ndarray:
    import soxr

    a = read_wav(PROMPTS / f"{name}.wav")
    x = np.frombuffer(a.pcm, dtype=np.int16)
    y = np.asarray(soxr.resample(x.astype(np.float32), a.sample_rate, RATE))
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def agent_voices() -> dict[str, np.ndarray]:
    """The agent's speech in three voices, about 30-60 s each, with 0.4 s between sentences."""
    gap = np.zeros(int(0.4 * RATE), dtype=np.int16)
    librivox = np.concatenate([p for u in utterances() for p in (u.samples, gap)])
    prompts = np.concatenate([p for n in PROMPT_NAMES for p in (_prompt(n), gap)])
    espeak = _synthesise("en-us+m3", ESPEAK_TEXT)
    return {"librivox": librivox, "asterisk": prompts, "espeak": espeak}


def room(n: int, seed: int) -> np.ndarray:
    """Pink-ish room noise at ``ROOM_DBFS``."""
    rng = np.random.default_rng(1000 + seed)
    w = rng.standard_normal(n)
    x = np.convolve(w, np.exp(-np.arange(64) / 12.0), mode="same")
    x *= 32768 * 10 ** (ROOM_DBFS / 20) / (np.sqrt(np.mean(x**2)) + 1e-9)
    return x.astype(np.int16)


def pcm(x: np.ndarray) -> WavAudio:
    return WavAudio(x.astype(np.int16).tobytes(), RATE, 1)


@dataclass
class Trial:
    phase: str
    path: str
    agent: str
    reference: bool
    seconds: float
    ratio_db: float | None = None
    user: str | None = None
    interrupts: int = 0
    early: int = 0  # interrupts before the user's onset
    detected: bool = False
    latency_ms: float | None = None
    echo_flag: bool = False  # the interrupt said echo_cancelled
    finals: str = ""
    wer: float | None = None


class Client:
    def __init__(self, nc: NATS, collector: ResultCollector, parallel: int, prefix: str) -> None:
        self.nc, self.collector = nc, collector
        self.sem = asyncio.Semaphore(parallel)
        self.prefix = prefix
        self.n = 0

    async def run(
        self, mic: np.ndarray, playback: np.ndarray | None, speed: float, rearm: bool
    ) -> tuple[SessionResults, StreamTiming]:
        async with self.sem:
            self.n += 1
            sid = f"{self.prefix}-{self.n}"
            res = self.collector.results(sid)
            timing = StreamTiming()
            task = asyncio.create_task(self._rearm(sid, res)) if rearm else None
            await stream_audio(
                self.nc,
                sid,
                pcm(mic),
                speed=speed,
                state="responding",
                timing=timing,
                playback=None if playback is None else pcm(playback),
            )
            await _settle(res)
            if task is not None:
                task.cancel()
        return res, timing

    async def _rearm(self, sid: str, res: SessionResults) -> None:
        """After each interrupt, the agent goes on talking: ``responding`` again."""
        seen = 0
        subject = f"{DEFAULT_INPUT}.{sid}"
        while True:
            await asyncio.sleep(0.05)
            n = len(res.interrupts)
            if n > seen:
                seen = n
                change = {"type": "state_change", "state": "responding"}
                await self.nc.publish(subject, msgpack.packb(change))


async def _settle(res: SessionResults, quiet_s: float = 1.5, limit_s: float = 20.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        last = res.arrivals[-1] if res.arrivals else t0
        if time.monotonic() - max(last, t0) > quiet_s:
            return
        await asyncio.sleep(0.1)


def _finals(res: SessionResults) -> str:
    return " ".join(m["transcript"].strip() for m in res.finals if m["transcript"].strip())


async def echo_alone(
    client: Client, voices: dict[str, np.ndarray], paths: list[EchoPath], speed: float
) -> list[Trial]:
    jobs = []
    for i, path in enumerate(paths):
        name = list(voices)[i % len(voices)]
        agent = np.concatenate([voices[name], voices[name]])[: 60 * RATE]
        mic = mix(path.apply(agent), room(agent.size, i))
        for ref in (True, False):
            jobs.append((path, name, ref, mic, agent))

    async def one(job: tuple[EchoPath, str, bool, np.ndarray, np.ndarray]) -> Trial:
        path, name, ref, mic, agent = job
        res, _ = await client.run(mic, agent if ref else None, speed, rearm=True)
        t = Trial("echo", path.label, name, ref, mic.size / RATE)
        t.interrupts = len(res.interrupts)
        t.finals = _finals(res)
        print(f"  echo  {'ref   ' if ref else 'no ref'} {name:8s} {path.label:38s} "
              f"{t.interrupts:3d} interrupts, finals: {t.finals[:60]!r}", flush=True)  # fmt: skip
        return t

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def _users(agent: str) -> list[tuple[str, np.ndarray]]:
    """Users of another voice than the agent's."""
    if agent == "asterisk":
        return [(u.name, u.samples) for u in utterances()[:4]]
    return [(n, _prompt(n)) for n in ("vm-intro", "conf-getpin", "auth-thankyou", "vm-options")]


async def double_talk(
    client: Client, voices: dict[str, np.ndarray], paths: list[EchoPath], ratios: list[float]
) -> list[Trial]:
    lead = 4 * RATE  # the user starts 4 s into the agent's speech (the canceller has learned)
    jobs = []
    for i, path in enumerate(paths):
        name = list(voices)[i % len(voices)]
        agent = np.concatenate([voices[name], voices[name]])
        for uname, user in _users(name):
            echo = path.apply(agent[: lead + user.size + 2 * RATE])
            for ratio in ratios:
                u = scaled_to(user, echo[lead : lead + user.size], ratio)
                mic = mix(echo, np.concatenate([np.zeros(lead, np.int16), u]), room(echo.size, i))
                onset = lead / RATE + speech_bounds(user)[0]
                for ref in (True, False):
                    jobs.append((path, name, uname, ratio, ref, mic, agent[: mic.size], onset))

    async def one(job: tuple[Any, ...]) -> Trial:
        path, name, uname, ratio, ref, mic, agent, onset = job
        res, timing = await client.run(mic, agent if ref else None, 1.0, rearm=False)
        t = Trial("double_talk", path.label, name, ref, mic.size / RATE, ratio, uname)
        sent = timing.sent_at(onset)
        at = [
            a
            for m, a in zip(res.messages, res.arrivals, strict=True)
            if m.get("type") == "interrupt"
        ]
        first = res.interrupts[0] if res.interrupts else None
        t.interrupts = len(at)
        t.early = sum(1 for a in at if sent is not None and a < sent - 0.05)
        late = [a for a in at if sent is not None and a >= sent - 0.05]
        if late and sent is not None and late[0] - sent <= RECALL_S:
            t.detected = True
            t.latency_ms = round((late[0] - sent) * 1000, 1)
        t.echo_flag = bool(first and first.get("echo_cancelled"))
        t.finals = _finals(res)
        return t

    return list(await asyncio.gather(*(one(j) for j in jobs)))


async def wer_phase(client: Client, voices: dict[str, np.ndarray]) -> list[Trial]:
    path = EchoPath(120, 6, 0.2, clip=3, seed=2)
    agent = np.concatenate([voices["asterisk"]] * 3)
    out = []
    for u in utterances():
        lead = 3 * RATE
        echo = path.apply(agent[: lead + u.samples.size + 2 * RATE])
        user = scaled_to(u.samples, echo[lead : lead + u.samples.size], 0.0)
        said = np.concatenate([np.zeros(lead, np.int16), user, np.zeros(2 * RATE, np.int16)])
        # an agent that stops when interrupted: its playback ends STOP_S after the user's onset
        stops = agent[: said.size].copy()
        stops[lead + int((speech_bounds(user)[0] + STOP_S) * RATE) :] = 0
        cases = [
            ("clean", said, None),
            ("echo, reference", mix(echo, said), agent[: said.size]),
            ("echo, no reference", mix(echo, said), None),
            ("agent stops, reference", mix(path.apply(stops)[: said.size], said), stops),
            ("agent stops, no reference", mix(path.apply(stops)[: said.size], said), None),
        ]
        for label, mic, ref in cases:
            res, _ = await client.run(mic, ref, 2.0, rearm=False)
            t = Trial("wer", label, "asterisk", ref is not None, mic.size / RATE, 0.0, u.name)
            t.finals = _finals(res)
            t.wer = word_error_rate(u.reference, t.finals)
            out.append(t)
    return out


def canceller_cost(sessions: int = 50, seconds: float = 10.0) -> float:
    """CPU ms per session-second of the canceller alone, ``sessions`` interleaved."""
    from stt_service.speech.echo import EchoCanceller

    voices = [u.samples for u in utterances()]
    agent = np.resize(np.concatenate(voices), int(seconds * RATE))
    mic = mix(EchoPath(120, 6).apply(agent), room(agent.size, 0))
    cans = [EchoCanceller(0) for _ in range(sessions)]
    t0 = time.process_time()
    for i in range(0, mic.size, 1600):
        for c in cans:
            c.reference.add(agent[i : i + 1600].tobytes(), RATE, c.received, 0.0)
            c.push(mic[i : i + 1600])
    return (time.process_time() - t0) * 1000 / (sessions * seconds)


def summarise(trials: list[Trial], cost_ms: float, worker: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {"canceller_cpu_ms_per_session_s": round(cost_ms, 2), "worker": worker}
    for ref in (True, False):
        key = "reference" if ref else "no_reference"
        echo = [t for t in trials if t.phase == "echo" and t.reference == ref]
        hours = sum(t.seconds for t in echo) / 3600
        finals = sum(1 for t in echo if t.finals)
        out[key] = {
            "echo_minutes": round(hours * 60, 1),
            "interrupts": sum(t.interrupts for t in echo),
            "interrupts_per_hour": round(sum(t.interrupts for t in echo) / hours, 1)
            if hours
            else 0,
            "sessions_with_finals": finals,
            "double_talk": {},
        }
        for ratio in sorted({t.ratio_db for t in trials if t.phase == "double_talk"}, reverse=True):
            ts = [
                t
                for t in trials
                if t.phase == "double_talk" and t.reference == ref and t.ratio_db == ratio
            ]
            lat = [t.latency_ms / 1000 for t in ts if t.latency_ms is not None]
            out[key]["double_talk"][f"{ratio:+g} dB"] = {
                "trials": len(ts),
                "recall": round(sum(t.detected for t in ts) / len(ts), 3) if ts else None,
                "latency_ms": pct_ms(lat),
                "early": sum(t.early for t in ts),
                "flagged_echo_cancelled": sum(t.echo_flag for t in ts),
            }
    wer = [t for t in trials if t.phase == "wer"]
    out["wer"] = {
        label: round(
            float(np.mean([t.wer for t in wer if t.path == label and t.wer is not None])), 3
        )
        for label in dict.fromkeys(t.path for t in wer)
    }
    return out


def table(s: dict[str, Any]) -> str:
    rows = ["| | with reference | without |", "| --- | --- | --- |"]
    r, n = s["reference"], s["no_reference"]
    rows.append(f"| echo alone ({r['echo_minutes']} min): interrupts / hour | "
                f"{r['interrupts_per_hour']} | {n['interrupts_per_hour']} |")  # fmt: skip
    rows.append(f"| echo alone: sessions with a non-empty final | {r['sessions_with_finals']} | "
                f"{n['sessions_with_finals']} |")  # fmt: skip
    for k, v in r["double_talk"].items():
        w = n["double_talk"][k]
        rows.append(
            f"| double talk {k}: recall, p50/p95 ms | {v['recall']:.0%}, "
            f"{v['latency_ms'].get('p50')}/{v['latency_ms'].get('p95')} | {w['recall']:.0%}, "
            f"{w['latency_ms'].get('p50')}/{w['latency_ms'].get('p95')} (early: {w['early']}) |"
        )
    wer = s["wer"]
    with_ref, without = wer.get("echo, reference", 0), wer.get("echo, no reference", 0)
    clean = wer.get("clean", 0)
    rows.append(f"| WER of the user at 0 dB, the agent talking on (clean: {clean:.1%})"
                f" | {with_ref:.1%} | {without:.1%} |")  # fmt: skip
    stop_ref = wer.get("agent stops, reference", 0)
    stop_no = wer.get("agent stops, no reference", 0)
    rows.append(f"| WER of the user at 0 dB, the agent stopping {STOP_S:g} s after the onset"
                f" | {stop_ref:.1%} | {stop_no:.1%} |")  # fmt: skip
    rows.append(f"| canceller CPU per session-second (50 sessions) | "
                f"{s['canceller_cpu_ms_per_session_s']} ms | - |")  # fmt: skip
    return "\n".join(rows)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    voices = agent_voices()
    paths = PATHS[:4] if args.quick else PATHS
    ratios = [6.0, 0.0, -6.0]
    with EmbeddedNats() as nats_server:
        worker = WorkerProcess(nats_server.url, {})
        try:
            if not worker.ready.wait(120):
                raise SystemExit("the worker did not start")
            nc = NATS()
            await nc.connect(nats_server.url)
            collector = await ResultCollector(nc).start()
            trials: list[Trial] = []
            print(f"echo alone: {len(paths)} paths x 2, at {args.speed:g}x ...", flush=True)
            cpu0 = worker.cpu_seconds()
            trials += await echo_alone(
                Client(nc, collector, args.parallel, "alone"), voices, paths, args.speed
            )
            cpu = worker.cpu_seconds() - cpu0
            session_s = sum(t.seconds for t in trials)
            dt_paths = paths[:2] if args.quick else paths[:8:2]
            print(f"double talk: {len(dt_paths)} paths x 4 users x 3 ratios x 2 ...", flush=True)
            trials += await double_talk(
                Client(nc, collector, args.parallel, "dt"), voices, dt_paths, ratios
            )
            print("WER in double talk ...", flush=True)
            trials += await wer_phase(Client(nc, collector, args.parallel, "wer"), voices)
            await nc.close()
        finally:
            worker.stop()
    cost = canceller_cost()
    s = summarise(
        trials, cost, {"cpu_ms_per_session_s_echo_phase": round(cpu * 1000 / session_s, 2)}
    )
    s["machine"] = {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}
    s["trials"] = [asdict(t) for t in trials]
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--speed", type=float, default=3.0, help="echo-alone pace (x real time)")
    p.add_argument("--parallel", type=int, default=4, help="sessions at once")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--chart-only", action="store_true")
    args = p.parse_args()
    out = args.out / "echo.json"
    if args.chart_only:
        chart(json.loads(out.read_text()), args.out / "echo.png")
        return
    if shutil.which("espeak-ng") is None:
        sys.exit("bench/echo.py needs espeak-ng (its third agent voice): apt-get install espeak-ng")
    s = asyncio.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(s, indent=1))
    print(table(s))
    print(f"\nresults: {out}")


def chart(s: dict[str, Any], png: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("reference", "with reference"), ("no_reference", "without")):
        dt = s[key]["double_talk"]
        xs = [float(k.split()[0]) for k in dt]
        a.plot(xs, [v["recall"] for v in dt.values()], marker="o", label=label)
        b.plot(xs, [v["latency_ms"].get("p95") for v in dt.values()], marker="o", label=label)
    a.set(xlabel="user-to-echo ratio (dB)", ylabel="barge-in recall (1.5 s)", ylim=(0, 1.05))
    b.set(xlabel="user-to-echo ratio (dB)", ylabel="onset to interrupt p95 (ms)")
    for ax in (a, b):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"echo alone: {s['reference']['interrupts_per_hour']} interrupts/h with the reference, "
        f"{s['no_reference']['interrupts_per_hour']} without"
    )
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"chart: {png}")


if __name__ == "__main__":
    main()
