"""The corpus's ``bargein`` steps (``bench/corpus.py``): real speech of two or more words.
Asterisk's English prompts and its Spanish, French, Italian and Russian ones (with their
transcripts), and LibriVox sentences cut into 2-4 s phrases at Whisper's word timestamps."""

from __future__ import annotations

import difflib
import random
import re

import numpy as np

from bench.corpus_audio import SEED, SR, SourceError, fade, frame_db, letters, load, trim, words_of
from bench.corpus_build import Build
from bench.corpus_steps_backchannel import ASTERISK_EN, asterisk_transcripts


def prompt_ok(said: str) -> bool:
    return (
        2 <= len(words_of(said)) <= 8
        and not re.search(r"[\[\]0-9#*@/]", said)
        and "..." not in said
        and not said.endswith("-")
    )


def asterisk_prompts(b: Build, lang: str, pkg: str, n: int, *, in_place: str | None) -> None:
    """``n`` prompts of 2-8 words and 0.8-4 s, picked at random (seeded), with transcripts."""
    try:
        said = asterisk_transcripts(b, lang)
        root = b.deb.root(pkg, ["usr/share/asterisk/sounds/*"], probe=in_place)
        base = root / "usr/share/asterisk/sounds"
        dirs = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if in_place:
            dirs = [root / in_place]
        if not dirs:
            raise SourceError(f"no sounds directory in {pkg}")
    except SourceError as e:
        b.fail(pkg, e)
        return
    keys = sorted(k for k, s in said.items() if "/" not in k and prompt_ok(s))
    random.Random(SEED).shuffle(keys)
    made = 0
    for key in keys:
        if made >= n:
            break
        path = dirs[0] / f"{key}.wav"
        if not path.exists():
            continue
        x = trim(load(path), pad=0.05)
        if not 0.8 <= len(x) / SR <= 4.0:
            continue
        made += 1
        heard = b.asr.text(x) if lang == "en" else None
        source = f"debian-package:/{path.relative_to(root)}"
        b.emit(
            "bargein",
            f"asterisk_{lang}",
            f"{lang}_{key}",
            x,
            source=source,
            package=pkg,
            text=said[key],
            language=lang,
            whisper=heard,
        )


def step_asterisk_en(b: Build) -> None:
    asterisk_prompts(b, "en", "asterisk-core-sounds-en-wav", 40, in_place=ASTERISK_EN[1:])


def step_asterisk_other(b: Build) -> None:
    for lang in ("es", "fr", "it", "ru"):
        asterisk_prompts(b, lang, f"asterisk-core-sounds-{lang}-wav", 10, in_place=None)


def align_text(ref: list[str], hyp: list[str]) -> list[int | None]:
    """For each Whisper word, the index of the reference word it matches (None if none)."""
    sm = difflib.SequenceMatcher(a=[letters(w) for w in hyp], b=[letters(w) for w in ref])
    out: list[int | None] = [None] * len(hyp)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag in ("equal", "replace") and i2 - i1 == j2 - j1:
            for k in range(i2 - i1):
                out[i1 + k] = j1 + k
    return out


def step_librivox(b: Build) -> None:
    pkg, base = "pocketsphinx-testdata", "/usr/share/pocketsphinx/test/data/librivox"
    try:
        tr = b.pkg_file(pkg, f"{base}/transcription", probe=True, members=[f"{base[1:]}/*"])
    except SourceError as e:
        b.fail(pkg, e)
        return
    for line in tr.read_text().splitlines():
        m = re.match(r"<s>(.*)</s>\s*\((.*)\)", line.strip())
        if not m:
            continue
        ref, utt = m.group(1).split(), m.group(2)
        got = b.recorded(pkg, f"{base}/{utt}.wav", probe=True)
        if got is None:
            continue
        x, source = got
        ws = b.asr.words(x)
        idx = align_text(ref, [w.text for w in ws])
        energy = frame_db(x)
        i, part, start = 0, 0, max(0.0, ws[0].start - 0.05) if ws else 0.0
        while i < len(ws) - 1:
            # the phrase ends after the word, 2-4 s in, followed by the longest pause
            ends = [j for j in range(i + 1, len(ws)) if 2.0 <= ws[j].end - start <= 4.0]
            if not ends:
                break
            j = max(ends, key=lambda k: (ws[k + 1].start - ws[k].end) if k + 1 < len(ws) else 9)
            lo = int((ws[j].end - 0.03) * 100)
            hi = int(((ws[j + 1].start if j + 1 < len(ws) else len(x) / SR) + 0.08) * 100)
            quiet = energy[lo : max(hi, lo + 1)]
            end = (lo + int(np.argmin(quiet))) / 100 if hi > lo and len(quiet) else ws[j].end
            end = min(len(x) / SR, end + 0.02)
            if j + 1 == len(ws):
                end = min(len(x) / SR, ws[j].end + 0.3)
            clip = fade(trim(x[int(start * SR) : int(end * SR)], pad=0.05))
            mapped = [idx[k] for k in range(i, j + 1)]
            if mapped[0] is not None and mapped[-1] is not None:
                text = " ".join(ref[mapped[0] : mapped[-1] + 1])
            else:
                text = " ".join(words_of(" ".join(w.text for w in ws[i : j + 1])))
            part += 1
            b.emit(
                "bargein",
                "librivox",
                f"{utt}_{part}",
                clip,
                source=source,
                package=pkg,
                text=text,
                language="en",
                whisper=b.asr.text(clip),
                note=f"{start:.2f}-{end:.2f} s, cut at Whisper word timestamps",
            )
            i, start = j + 1, end
