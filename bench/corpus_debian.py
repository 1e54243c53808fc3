"""The corpus builder's Debian sources (``bench/corpus.py``): ``apt-get download`` and partial
unpacking of packages into the corpus's cache (or reading installed ones in place), and each
file's licence from the package's copyright file (DEP-5 stanzas or a licence named in prose)."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus_audio import SourceError, log, run

BIG_DEB_BYTES = 500_000_000  # debs larger than this are deleted once their members are unpacked


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
