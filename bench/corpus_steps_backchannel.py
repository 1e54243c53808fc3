"""The corpus's ``backchannel`` step (``bench/corpus.py``): a listener's lone "yeah", "okay",
"oh" ...: whole recordings and single words cut out of recorded prompts, each kept only if
Whisper hears exactly that word, and espeak-ng's for the words no recording has."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.corpus_audio import SR, Audio, SourceError, fade, frame_db, letters, load, log, run, trim
from bench.corpus_build import Build, stem

# accepted Whisper spellings of each backchannel word, compared with letters only ("Uh-huh." ->
# "uhhuh")
BACKCHANNEL_WORDS: dict[str, set[str]] = {
    "yeah": {"yeah", "yea", "yeh"},
    "okay": {"okay", "ok"},
    "right": {"right"},
    "yes": {"yes"},
    "uh-huh": {"uhhuh"},
    "mm-hmm": {"mmhmm", "mhm", "mmhm", "hmhm"},
    "oh": {"oh"},
    "aha": {"aha", "ahha"},
}

ASTERISK_EN = "/usr/share/asterisk/sounds/en_US_f_Allison"
BACKCHANNEL_FILES = [
    ("yeah", "hannah-data", "/usr/share/games/hannah/sounds/yeah.wav"),
    ("yeah", "gnujump-data", "/usr/share/games/gnujump/sound/yeah.ogg"),
    ("okay", "libreoffice-common", "/usr/lib/libreoffice/share/gallery/sounds/ok.wav"),
    ("oh", "asterisk-core-sounds-en-wav", f"{ASTERISK_EN}/digits/oh.wav"),
    ("oh", "heroes-sound-effects", "/usr/share/games/heroes/sfx/oh.wav"),
    ("yes", "netpanzer-data", "/usr/share/games/netpanzer/sound/yessir.wav"),
    ("aha", "klettres-data", "/usr/share/klettres/ml/alpha/aha.ogg"),
]


def is_word(heard: str, word: str) -> bool:
    return letters(heard) in BACKCHANNEL_WORDS[word]


def hears_word(b: Build, x: Audio, word: str) -> tuple[bool, str]:
    """Whether Whisper hears ``word`` alone in ``x``, as it is or (tiny.en is erratic on clips
    under a second) with half a second of silence either side; and what it heard."""
    heard = b.asr.text(x)
    if is_word(heard, word):
        return True, heard
    silence = np.zeros(SR // 2, dtype=np.float32)
    padded = b.asr.text(np.concatenate([silence, x, silence]))
    if is_word(padded, word):
        return True, padded
    return False, heard if letters(heard) else padded


def cut_word(b: Build, x: Audio, word: str) -> tuple[Audio, str, str] | None:
    """``word`` cut out of a recorded phrase, as Whisper hears it alone: the cut starts 50 ms
    before Whisper's word start (or at the quietest point after the previous word) and ends at
    the quietest frame among the end points at which Whisper hears exactly the word."""
    ws = b.asr.words(x)
    e = frame_db(x)
    for i, w in enumerate(ws):
        if letters(w.text) not in BACKCHANNEL_WORDS[word]:
            continue
        start = max(0.0, w.start - 0.05)
        if i > 0:
            lo, hi = int(ws[i - 1].end * 100), int((w.start + 0.05) * 100)
            if hi > lo:
                start = max(start, (lo + int(np.argmin(e[lo:hi]))) / 100)
        limit = min(len(x) / SR, (ws[i + 1].end if i + 1 < len(ws) else len(x) / SR), w.end + 0.4)
        passing: list[float] = []
        end = w.start + 0.15
        while end <= limit + 1e-6:
            if hears_word(b, fade(x[int(start * SR) : int(end * SR)]), word)[0]:
                passing.append(end)
            elif passing:
                break
            end += 0.025
        if not passing:
            continue
        # the latest of the quietest passing end points: the word's whole tail, none of the next
        level = [float(e[min(len(e) - 1, int(t * 100))]) for t in passing]
        best = max(t for t, lv in zip(passing, level, strict=True) if lv <= min(level) + 6)
        best = min(len(x) / SR, best + 0.03)  # 30 ms of the quiet after the word
        cut = fade(x[int(start * SR) : int(best * SR)])
        ok, heard = hears_word(b, cut, word)
        if ok:
            return cut, heard, f"cut {start:.2f}-{best:.2f} s at Whisper word timestamps"
    return None


def asterisk_transcripts(b: Build, lang: str) -> dict[str, str]:
    pkg = f"asterisk-core-sounds-{lang}"
    path = f"usr/share/doc/{pkg}/core-sounds-{lang}.txt.gz"
    root = b.deb.root(pkg, [path])
    text = gzip.decompress((root / path).read_bytes()).decode("utf-8-sig", errors="replace")
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, said = line.partition(":")
        if sep and not line.startswith(";") and key.strip() and " " not in key.strip():
            out[key.strip()] = said.strip()
    return out


def step_backchannel(b: Build) -> None:
    per_word: dict[str, int] = {}
    candidates: list[tuple[str, str, str]] = list(BACKCHANNEL_FILES)
    try:  # prompts whose transcript holds a backchannel word, for cutting it out
        for key, said in sorted(asterisk_transcripts(b, "en").items()):
            for word, spellings in BACKCHANNEL_WORDS.items():
                toks = [letters(t) for t in said.split()]
                if len(toks) > 1 and any(t in spellings for t in toks):
                    path = f"{ASTERISK_EN}/{key}.wav"
                    candidates.append((word, "asterisk-core-sounds-en-wav", path))
    except SourceError as e:
        b.fail("asterisk-core-sounds-en (transcripts)", e)
    librivox = "/usr/share/pocketsphinx/test/data/librivox"
    try:
        tr = b.pkg_file("pocketsphinx-testdata", f"{librivox}/transcription", probe=True)
        for line in tr.read_text().splitlines():
            m = re.match(r"<s>(.*)</s>\s*\((.*)\)", line.strip())
            if not m:
                continue
            for word, spellings in BACKCHANNEL_WORDS.items():
                if any(letters(t) in spellings for t in m.group(1).split()):
                    candidates.append((word, "pocketsphinx-testdata", f"{librivox}/{m[2]}.wav"))
    except SourceError as e:
        b.fail("pocketsphinx-testdata (transcription)", e)
    in_place = ("asterisk", "pocketsphinx")
    b.prefetch((pkg, path) for _, pkg, path in candidates if not pkg.startswith(in_place))
    for word, pkg, path in candidates:
        got = b.recorded(pkg, path, probe=pkg.startswith(in_place))
        if got is None:
            continue
        x, source = got
        x = trim(x, pad=0.05)
        if b.duplicate(x, source, "backchannel"):
            continue
        ok, heard = hears_word(b, x, word)
        note = "whole recording, silence trimmed"
        if not ok:
            cut = cut_word(b, x, word)
            if cut is None:
                b.drop(source, word, f"not {word!r} alone: Whisper heard {heard!r}")
                continue
            x, heard, note = cut
        per_word[word] = per_word.get(word, 0) + 1
        name = f"{letters(word)}_{pkg.split('-')[0]}_{stem(path)}"
        b.emit(
            "backchannel",
            letters(word),
            name,
            x,
            source=source,
            package=pkg,
            text=word,
            language="en",
            whisper=heard,
            note=note,
        )
    step_backchannel_synthetic(b, per_word)


ESPEAK_PACKAGES = [
    "espeak-ng",
    "libespeak-ng1",
    "espeak-ng-data",
    "libpcaudio0",
    "libsonic0",
    "libpulse0",
    "libasyncns0",
]
# what espeak-ng says for each word (phonemes in [[ ]] where its spelling-to-sound goes wrong)
ESPEAK_INPUT = {
    "uh-huh": ["uh huh?", "[[Vh'hV]]", "[[,Vh'hV:]]", "[[V'hV:]]", "[[,Vh'V]]", "[['Vh,V]]"],
    "mm-hmm": ["[[m@m'h@m]]", "[[m@m'hm@m]]", "mm hmm?"],
    "aha": ["ah ha!", "a ha", "aha!", "[[A:h'A:]]"],
    "yeah": ["yeah"],
    "okay": ["okay"],
    "right": ["right"],
    "yes": ["yes"],
    "oh": ["oh"],
}
ESPEAK_VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb-x-rp+f4"]
SYNTH_PER_WORD = 3


def espeak(b: Build) -> Callable[[str, str, Path], None] | None:
    """A function that speaks text into a WAV file, or None: espeak-ng on PATH, else the Debian
    packages unpacked in the cache, else (as root) ``apt-get install espeak-ng``."""
    if exe := shutil.which("espeak-ng"):

        def on_path(voice: str, text: str, wav: Path) -> None:
            run([exe, "-v", voice, "-s", "150", "-w", str(wav), text])

        return on_path
    try:
        for pkg in ESPEAK_PACKAGES:
            b.deb.root(pkg, ["usr/bin/*", "usr/lib/*"])
        libs = [str(d) for p in ESPEAK_PACKAGES for d in (b.deb.src / p).glob("usr/lib/*-linux-*")]
        libs += [f"{lib}/pulseaudio" for lib in libs]
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(libs)}
        exe2 = str(b.deb.src / "espeak-ng/usr/bin/espeak-ng")
        found = sorted((b.deb.src / "espeak-ng-data").glob("usr/lib/*/espeak-ng-data"))
        if not found:
            raise SourceError("no espeak-ng-data directory")
        data = str(found[0].parent)
        probe = subprocess.run([exe2, "--path", data, "--version"], env=env, capture_output=True)
        if probe.returncode == 0:

            def unpacked(voice: str, text: str, wav: Path) -> None:
                cmd = [exe2, "--path", data, "-v", voice, "-s", "150", "-w", str(wav), text]
                if subprocess.run(cmd, env=env, capture_output=True).returncode:
                    raise SourceError(f"espeak-ng failed on {text!r}")

            return unpacked
        log("      unpacked espeak-ng does not run here (libraries missing)")
    except (SourceError, OSError) as e:
        log(f"      unpacked espeak-ng unusable: {e}")
    if os.geteuid() == 0:
        log("      apt-get install espeak-ng")
        proc = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "espeak-ng"],
            capture_output=True,
            check=False,
        )
        if proc.returncode == 0 and shutil.which("espeak-ng"):
            return espeak(b)
    return None


def step_backchannel_synthetic(b: Build, recorded: dict[str, int]) -> None:
    missing = [w for w in BACKCHANNEL_WORDS if recorded.get(w, 0) == 0]
    if not missing:
        return
    say = espeak(b)
    if say is None:
        b.res.failed.append(f"espeak-ng: unavailable, no synthetic {', '.join(missing)}")
        return
    tmp = b.out / ".cache" / "espeak.wav"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    for word in missing:
        made, tried = 0, []
        for text in ESPEAK_INPUT[word]:
            for voice in ESPEAK_VOICES:
                if made >= SYNTH_PER_WORD:
                    break
                say(voice, text, tmp)
                x = trim(load(tmp), pad=0.05)
                ok, heard = hears_word(b, x, word)
                if not ok:
                    tried.append(f"{voice} {text!r} -> {heard!r}")
                    continue
                made += 1
                b.emit(
                    "backchannel",
                    letters(word),
                    f"{letters(word)}_espeak_{made}",
                    x,
                    source=f"espeak-ng:{voice}:{text}",
                    text=word,
                    language="en",
                    synthetic=True,
                    whisper=heard,
                    note="espeak-ng -s 150",
                )
        if made == 0:
            b.drop(
                f"espeak-ng:{word}",
                letters(word),
                "Whisper heard none as the word: " + "; ".join(tried[:6]),
            )
