"""Child processes of a bench: each reports on stdout in ``KIND {json}`` lines (:func:`emit`), and
the orchestrator collects them, its stderr log and its CPU (:class:`Child`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
from typing import Any

from bench.common import proc_cpu_seconds, proc_status_kb


def emit(kind: str, data: dict[str, Any]) -> None:
    """A child process's report to the orchestrator: one ``KIND {json}`` line on stdout."""
    print(f"{kind} {json.dumps(data)}", flush=True)


class Child:
    """A child process; its ``KIND {json}`` stdout lines and its stderr lines are collected."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.reports: dict[str, dict[str, Any]] = {}
        self.log: list[str] = []
        self._got: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.peak_rss_kb = 0
        self._tasks = [asyncio.create_task(self._stdout()), asyncio.create_task(self._stderr())]

    @classmethod
    async def start(cls, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "STT_HEALTH_PORT": "0", **(env or {})},
            limit=1 << 20,
        )
        return cls(name, proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _stdout(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            kind, _, rest = raw.decode(errors="replace").strip().partition(" ")
            if kind in ("READY", "RESULT"):
                self.reports[kind] = json.loads(rest or "{}")
                self._got[kind].set()

    async def _stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.log.append(raw.decode(errors="replace").rstrip())
            if "listening on" in self.log[-1]:
                self._got["listening"].set()

    async def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        waiter = asyncio.create_task(self._got[kind].wait())
        exited = asyncio.create_task(self.proc.wait())
        await asyncio.wait({waiter, exited}, timeout=timeout, return_when="FIRST_COMPLETED")
        if not self._got[kind].is_set():
            await asyncio.sleep(0.2)  # a report printed just before exiting
        waiter.cancel()
        exited.cancel()
        if not self._got[kind].is_set():
            tail = "\n    ".join(self.log[-15:])
            raise RuntimeError(
                f"{self.name}: no {kind} (waited up to {timeout:g} s); log:\n    {tail}"
            )
        return self.reports.get(kind, {})

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def sample_rss(self) -> None:
        self.peak_rss_kb = max(self.peak_rss_kb, proc_status_kb(self.pid, "VmHWM"))

    async def stop(self, timeout: float = 30.0) -> int:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            print(f"  {self.name} did not stop within {timeout:g} s: killed", flush=True)
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.proc.returncode or 0
