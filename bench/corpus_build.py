"""The corpus builder's state (``bench/corpus.py``): a :class:`Build` holds the output directory,
the Debian fetcher, Whisper and the current step's :class:`StepResult`, and gives the steps
their helpers: read a packaged recording, record a failure or a dropped candidate, skip a
recording already used, and write a clip with its manifest entry."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus_asr import Asr
from bench.corpus_audio import (
    SR,
    Audio,
    Json,
    SourceError,
    load,
    log,
    rms_db,
    same_sound,
    write_wav,
)
from bench.corpus_debian import Debian


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
