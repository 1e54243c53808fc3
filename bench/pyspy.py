"""py-spy profiles of a bench's processes: sampled to a file, read back as their hottest
functions (self and inclusive time)."""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def start_profiles(
    pids: dict[str, int], seconds: float, out_dir: Path, tag: str
) -> tuple[asyncio.subprocess.Process | None, dict[str, Path]]:
    """py-spy ``record`` of each pid (raw collapsed stacks), in the middle of the run."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("  --profile: py-spy is not on PATH (uv run --with py-spy ...): skipped", flush=True)
        return None, {}
    out_dir.mkdir(parents=True, exist_ok=True)
    span = max(2, int(seconds * 0.6))
    files = {name: out_dir / f"msgpath-{name}-{tag}.collapsed" for name in pids}
    script = " & ".join(
        f"{spy} record --pid {pid} --duration {span} --rate 50 --nonblocking --function "
        "--full-filenames --format raw "
        f"--output {files[name]} >/dev/null 2>&1"
        for name, pid in pids.items()
    )
    proc = await asyncio.create_subprocess_shell(f"sleep {seconds * 0.2:.1f}; {script}; wait")
    print(f"  py-spy: sampling {', '.join(pids)} for {span} s -> {out_dir}", flush=True)
    return proc, files


def top_functions(path: Path, top: int) -> dict[str, Any]:
    """Self and inclusive sample shares of the hottest functions in a py-spy raw profile."""
    if not path.is_file():
        return {}
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + short_path(f) + ")" for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return {}
    scaffolding = (
        "(asyncio/",
        "(<frozen runpy>",
        "<module> (",
        "(stt_service/commands/",
        "(bench/",
    )
    inclusive = [(f, c) for f, c in incl.most_common() if not any(x in f for x in scaffolding)]
    return {
        "samples": total,
        "self": {f: round(100 * c / total, 1) for f, c in own.most_common(top)},
        "inclusive": {f: round(100 * c / total, 1) for f, c in inclusive[: top * 2]},
    }


def short_path(frame: str) -> str:
    """``module/file.py:line`` of a py-spy frame ``func (path:line)``."""
    m = re.search(r"\((.*)\)$", frame)
    if m is None:
        return "?"
    path = m.group(1)
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return "/".join(path.rsplit("/", 2)[-2:])
