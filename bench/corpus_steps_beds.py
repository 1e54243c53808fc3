"""The corpus's ``bed`` steps (``bench/corpus.py``): continuous backgrounds. sox's coloured noise
and mains hum, Asterisk's music on hold, Bucklespring's key sounds sequenced as typing, and
recorded ambient rooms, crowds (babble) and ALSA's noise, looped or cut to 30-60 s."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.corpus_audio import (
    SEED,
    SR,
    Audio,
    SourceError,
    fade,
    harmonicity,
    load,
    loop_to,
    normalise,
    soft_limit,
    synth,
    trim,
    xfade_concat,
)
from bench.corpus_build import Build, stem

MUSIC_PIECES_PER_TRACK = 2  # 60 s pieces taken as recorded from each music-on-hold track
BED_SECONDS = 40.0
LOOP_SECONDS = 30.0


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
