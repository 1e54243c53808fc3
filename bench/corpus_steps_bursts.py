"""The corpus's ``burst`` steps (``bench/corpus.py``): short recorded non-speech sounds (laughs,
claps, doors, a "hmm" ...) cut out of packaged recordings at their silences, and the optional
FlightGear step (a cough and a few ambient beds from its 1.3 GB package)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench.corpus_audio import SR, Audio, SourceError, fade, letters, rms_db, segments, split_long
from bench.corpus_build import Build, stem
from bench.corpus_steps_beds import BedSource, beds_from

MAX_BURSTS_PER_SOURCE = 4

HMM = re.compile(r"^h*m+h*m*$")


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
