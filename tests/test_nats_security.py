"""NATS security against real nats-server processes: user/password, token, NKey, a decentralised
``.creds`` file and TLS with a client certificate (certificates by trustme, JWTs signed with
nkeys here). Good credentials connect and a session round-trips; bad ones make ``stt-service
serve`` exit 1 within seconds with one clear line that names the cause and never the secret."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nats
import nkeys
import pytest
import trustme

from stt_service.audio import read_wav
from stt_service.backends import make_recognizer
from stt_service.bus.embedded import find_nats_server, free_port, wait_for_port
from stt_service.bus.natsauth import nats_options
from stt_service.bus.natsconn import connect_nats
from stt_service.commands.client import ResultCollector, stream_audio
from stt_service.config import ConfigError, Settings, load_settings
from stt_service.config.nats import redact_url
from stt_service.runner.worker import Worker

from .test_cli import _wait_ready

CLI = [sys.executable, "-m", "stt_service.commands.cli"]
INFO_LOG = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (INFO|DEBUG) ")
PASSWORD = "pw-Gq7xZr2"
TOKEN = "tok-Vn4Kd9s"
WRONG_PASSWORD = "wrong-pw-Jm3"
WRONG_TOKEN = "wrong-tok-Hx8"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment the tests run in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


# --- key material ---------------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Key:
    """An NKey pair of one role (operator, account or user)."""

    def __init__(self, prefix: int) -> None:
        self.seed = nkeys.encode_seed(os.urandom(32), prefix).decode()
        self.kp = nkeys.from_seed(bytearray(self.seed.encode()))
        self.public = self.kp.public_key.decode()

    def sign_jwt(self, subject: str, name: str, nats_claims: dict[str, Any]) -> str:
        """A NATS JWT (ed25519-nkey) issued by this key, as ``nsc`` would write it."""
        claims = {
            "jti": base64.b32encode(os.urandom(20)).decode().rstrip("="),
            "iat": int(time.time()),
            "iss": self.public,
            "name": name,
            "sub": subject,
            "nats": {**nats_claims, "version": 2},
        }
        head = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        body = _b64url(json.dumps(claims).encode())
        return f"{head}.{body}.{_b64url(self.kp.sign(f'{head}.{body}'.encode()))}"


def _creds(user_jwt: str, seed: str) -> str:
    return (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


@dataclass
class Material:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    elsewhere_cert: str  # the server's CA, for another address than the server's
    elsewhere_key: str
    other_ca: str  # a CA the server does not know, and a client certificate it issued
    other_cert: str
    other_key: str
    nkey_public: str
    nkey_seed_file: str
    other_seed_file: str
    other_seed: str
    operator_jwt: str
    account_public: str
    account_jwt: str
    creds_file: str
    bad_creds_file: str  # a user signed by an account the server does not know
    user_seed: str


@pytest.fixture(scope="module")
def m(tmp_path_factory: pytest.TempPathFactory) -> Material:
    d = tmp_path_factory.mktemp("nats-security")

    def write(name: str, text: str | bytes) -> str:
        path = d / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    elsewhere = ca.issue_cert("nats.example")
    client = ca.issue_cert("stt-worker.example")
    stranger = other.issue_cert("stt-worker.example")

    user, other_user = _Key(nkeys.PREFIX_BYTE_USER), _Key(nkeys.PREFIX_BYTE_USER)
    operator, account = _Key(nkeys.PREFIX_BYTE_OPERATOR), _Key(nkeys.PREFIX_BYTE_ACCOUNT)
    unknown_account = _Key(nkeys.PREFIX_BYTE_ACCOUNT)
    unlimited = {"subs": -1, "data": -1, "payload": -1}
    account_jwt = operator.sign_jwt(
        account.public,
        "stt",
        {
            "type": "account",
            "limits": {**unlimited, "imports": -1, "exports": -1, "wildcards": True, "conn": -1},
        },
    )
    user_claims = {"type": "user", "pub": {}, "sub": {}, **unlimited}
    user_jwt = account.sign_jwt(user.public, "stt-worker", user_claims)
    stray_jwt = unknown_account.sign_jwt(user.public, "stt-worker", user_claims)
    return Material(
        ca=write("ca.pem", ca.cert_pem.bytes()),
        server_cert=write("server.pem", server.cert_chain_pems[0].bytes()),
        server_key=write("server.key", server.private_key_pem.bytes()),
        elsewhere_cert=write("elsewhere.pem", elsewhere.cert_chain_pems[0].bytes()),
        elsewhere_key=write("elsewhere.key", elsewhere.private_key_pem.bytes()),
        client_cert=write("client.pem", client.cert_chain_pems[0].bytes()),
        client_key=write("client.key", client.private_key_pem.bytes()),
        other_ca=write("other-ca.pem", other.cert_pem.bytes()),
        other_cert=write("stranger.pem", stranger.cert_chain_pems[0].bytes()),
        other_key=write("stranger.key", stranger.private_key_pem.bytes()),
        nkey_public=user.public,
        nkey_seed_file=write("user.nk", user.seed + "\n"),
        other_seed_file=write("other.nk", other_user.seed + "\n"),
        other_seed=other_user.seed,
        operator_jwt=write(
            "operator.jwt", operator.sign_jwt(operator.public, "op", {"type": "operator"})
        ),
        account_public=account.public,
        account_jwt=account_jwt,
        creds_file=write("user.creds", _creds(user_jwt, user.seed)),
        bad_creds_file=write("stray.creds", _creds(stray_jwt, user.seed)),
        user_seed=user.seed,
    )


def server_conf(m: Material, kind: str) -> str:
    tls = (
        f'tls {{ cert_file: "{m.server_cert}", key_file: "{m.server_key}", '
        f'ca_file: "{m.ca}", verify: true, timeout: 2 }}\n'
    )
    operator = (
        f'operator: "{m.operator_jwt}"\nresolver: MEMORY\n'
        f'resolver_preload: {{ {m.account_public}: "{m.account_jwt}" }}\n'
    )
    elsewhere = (
        f'tls {{ cert_file: "{m.elsewhere_cert}", key_file: "{m.elsewhere_key}", timeout: 2 }}\n'
    )
    return {
        "tls-elsewhere": elsewhere,
        "userpass": f'authorization {{ user: alice, password: "{PASSWORD}" }}\n',
        "token": f'authorization {{ token: "{TOKEN}" }}\n',
        "nkey": f"authorization {{ users: [ {{ nkey: {m.nkey_public} }} ] }}\n",
        "creds": operator,
        "tls": tls,
        "tls+creds": tls + operator,
    }[kind]


@contextlib.contextmanager
def nats_server(tmp_path: Path, conf: str) -> Iterator[str]:
    """A real nats-server with ``conf``, on a free loopback port; yields its nats:// URL."""
    port = free_port()
    path = tmp_path / f"nats-{port}.conf"
    path.write_text(f"listen: 127.0.0.1:{port}\n{conf}")
    proc = subprocess.Popen(
        [find_nats_server(), "-c", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        try:
            wait_for_port("127.0.0.1", port, 10.0)
        except TimeoutError:
            proc.kill()
            raise AssertionError(f"nats-server did not start: {proc.communicate()[1]!r}") from None
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _with_userinfo(url: str, userinfo: str) -> str:
    return url.replace("nats://", f"nats://{userinfo}@", 1)


@pytest.fixture(scope="module")
def whisper_stub() -> Iterator[str]:
    """Something that answers HTTP, so the whisper-http backend starts quietly (it decodes
    nothing here: these tests only need a worker that connects, subscribes and publishes)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# --- good credentials -----------------------------------------------------------------------------
# (server kind, settings for the worker, userinfo for NATS_URL)
GOOD: dict[str, tuple[str, Callable[[Material], dict[str, str]], str]] = {
    "user-password": ("userpass", lambda m: {"nats_user": "alice", "nats_password": PASSWORD}, ""),
    "password-in-url": ("userpass", lambda m: {}, f"alice:{PASSWORD}"),
    "token": ("token", lambda m: {"nats_token": TOKEN}, ""),
    "token-in-url": ("token", lambda m: {}, TOKEN),
    "nkey": ("nkey", lambda m: {"nats_nkey_seed_file": m.nkey_seed_file}, ""),
    "creds": ("creds", lambda m: {"nats_creds_file": m.creds_file}, ""),
    "tls-client-cert": (
        "tls",
        lambda m: {
            "nats_tls_ca_file": m.ca,
            "nats_tls_cert_file": m.client_cert,
            "nats_tls_key_file": m.client_key,
        },
        "",
    ),
}


@pytest.mark.parametrize("case", list(GOOD))
async def test_good_credentials_connect_and_a_session_round_trips(
    case: str, m: Material, tmp_path: Path, whisper_stub: str
) -> None:
    kind, settings_for, userinfo = GOOD[case]
    with nats_server(tmp_path, server_conf(m, kind)) as url:
        settings = load_settings(
            nats_url=_with_userinfo(url, userinfo) if userinfo else url,
            stt_backend="whisper-http",
            whisper_url=whisper_stub,
            **settings_for(m),
        )
        worker = Worker(settings, make_recognizer(settings))
        await worker.start()  # connect_nats with the settings' credentials and TLS
        # a client as `stt-service send`/`tail` connect: the same options from the settings
        nc = await nats.connect(settings.nats_url, connect_timeout=3, **nats_options(settings))
        try:
            collector = await ResultCollector(nc, settings.stt_output_subject).start()
            await expect_unknown_session(nc, collector, f"{settings.stt_input_subject}.sec-1")
        finally:
            await nc.close()
            await worker.stop()


async def expect_unknown_session(nc: Any, collector: ResultCollector, subject: str) -> None:
    """A round trip through the worker: an ``end`` for a session it never saw is answered."""
    await nc.publish(subject, msgpack.packb({"type": "end"}, use_bin_type=True))
    res = collector.results(subject.rsplit(".", 1)[1])
    for _ in range(100):
        if res.errors:
            break
        await asyncio.sleep(0.02)
    assert [e["code"] for e in res.errors] == ["unknown_session"]


@pytest.mark.slow
async def test_real_speech_over_tls_with_a_token(m: Material, tmp_path: Path) -> None:
    """The whole path on a secured server: the bundled model transcribes the bundled sample."""
    conf = server_conf(m, "tls") + f'authorization {{ token: "{TOKEN}" }}\n'
    sample = read_wav(Path(__file__).parent.parent / "stt_service" / "data" / "sample.wav")
    first = type(sample)(sample.pcm[: 16000 * 2 * 5], sample.sample_rate, sample.channels)
    with nats_server(tmp_path, conf) as url:
        settings = load_settings(
            nats_url=url.replace("nats://", "tls://"),
            nats_token=TOKEN,
            nats_tls_ca_file=m.ca,
            nats_tls_cert_file=m.client_cert,
            nats_tls_key_file=m.client_key,
        )
        worker = Worker(settings, make_recognizer(settings))
        await worker.start()
        nc = await connect_nats(settings, name="test-client")
        try:
            collector = await ResultCollector(nc, settings.stt_output_subject).start()
            await stream_audio(nc, "sec-speech", first, speed=0)
            res = collector.results("sec-speech")
            for _ in range(600):
                if res.finals:
                    break
                await asyncio.sleep(0.05)
            assert "he was not" in res.text.lower(), res.text
        finally:
            await nc.close()
            await worker.stop()


def _serve_env(url: str, whisper_stub: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STT_", "NATS_", "WHISPER_", "LOG_LEVEL"))
    }
    env.update(
        NATS_URL=url,
        STT_BACKEND="whisper-http",
        WHISPER_URL=whisper_stub,
        STT_HEALTH_PORT="0",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


async def test_serve_with_creds_over_tls_starts_serves_and_stops(
    m: Material, tmp_path: Path, whisper_stub: str
) -> None:
    """`stt-service serve` configured only by environment variables: creds file and TLS."""
    secure = {
        "NATS_CREDS_FILE": m.creds_file,
        "NATS_TLS_CA_FILE": m.ca,
        "NATS_TLS_CERT_FILE": m.client_cert,
        "NATS_TLS_KEY_FILE": m.client_key,
    }
    with nats_server(tmp_path, server_conf(m, "tls+creds")) as url:
        proc = subprocess.Popen(
            [*CLI, "serve"],
            env=_serve_env(url, whisper_stub, **secure),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            lines = await _wait_ready(proc, 30)
            settings = load_settings(nats_url=url, **{k.lower(): v for k, v in secure.items()})
            nc = await connect_nats(settings, name="test-client")
            try:
                collector = await ResultCollector(nc).start()
                await expect_unknown_session(nc, collector, "ai.voice.stream.sec-2")
            finally:
                await nc.close()
            proc.send_signal(signal.SIGTERM)
            out, _ = await asyncio.to_thread(proc.communicate, timeout=20)
            assert proc.returncode == 0, "".join(lines) + out
            assert m.user_seed not in "".join(lines) + out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --- bad credentials: one clear line, exit 1, within seconds --------------------------------------
# (server kind, environment for serve, userinfo for NATS_URL, what the line says, the secret)
EnvFor = Callable[[Material], dict[str, str]]
BAD: dict[str, tuple[str, EnvFor, str, str, Callable[[Material], str]]] = {
    "wrong-password": (
        "userpass",
        lambda m: {"NATS_USER": "alice", "NATS_PASSWORD": WRONG_PASSWORD},
        "",
        "authorization violation (check NATS_USER/NATS_PASSWORD)",
        lambda m: WRONG_PASSWORD,
    ),
    "no-credentials": (
        "userpass",
        lambda m: {},
        "",
        "authorization violation (the server requires credentials: set NATS_USER/NATS_PASSWORD, "
        "NATS_TOKEN, NATS_NKEY_SEED_FILE or NATS_CREDS_FILE)",
        lambda m: PASSWORD,
    ),
    "wrong-password-in-url": (
        "userpass",
        lambda m: {},
        f"alice:{WRONG_PASSWORD}",
        "nats://alice:***@127.0.0.1:",
        lambda m: WRONG_PASSWORD,
    ),
    "wrong-token": (
        "token",
        lambda m: {"NATS_TOKEN": WRONG_TOKEN},
        "",
        "authorization violation (check NATS_TOKEN)",
        lambda m: WRONG_TOKEN,
    ),
    "unknown-nkey": (
        "nkey",
        lambda m: {"NATS_NKEY_SEED_FILE": m.other_seed_file},
        "",
        "authorization violation (check NATS_NKEY_SEED_FILE)",
        lambda m: m.other_seed,
    ),
    "creds-of-an-unknown-account": (
        "creds",
        lambda m: {"NATS_CREDS_FILE": m.bad_creds_file},
        "",
        "authorization violation (check NATS_CREDS_FILE)",
        lambda m: m.user_seed,
    ),
    "tls-server-not-trusted": (
        "tls",
        lambda m: {"NATS_TLS_CERT_FILE": m.client_cert, "NATS_TLS_KEY_FILE": m.client_key},
        "",
        "TLS: the server's certificate is not trusted: unable to get local issuer certificate "
        "(set NATS_TLS_CA_FILE to the CA that signed the server's certificate)",
        lambda m: "PRIVATE KEY",
    ),
    "tls-wrong-ca": (
        "tls",
        lambda m: {
            "NATS_TLS_CA_FILE": m.other_ca,
            "NATS_TLS_CERT_FILE": m.client_cert,
            "NATS_TLS_KEY_FILE": m.client_key,
        },
        "",
        "TLS: the server's certificate is not trusted: unable to get local issuer certificate "
        "(check NATS_TLS_CA_FILE)",
        lambda m: "PRIVATE KEY",
    ),
    "tls-certificate-for-another-address": (
        "tls-elsewhere",
        lambda m: {"NATS_TLS_CA_FILE": m.ca},
        "",
        "TLS: the server's certificate is not trusted: IP address mismatch, certificate is not "
        "valid for '127.0.0.1'. (the certificate is for another address: check NATS_URL's host)",
        lambda m: "PRIVATE KEY",
    ),
    "tls-no-client-cert": (
        "tls",
        lambda m: {"NATS_TLS_CA_FILE": m.ca},
        "",
        "TLS: the server ",
        lambda m: "PRIVATE KEY",
    ),
    "tls-client-cert-of-another-ca": (
        "tls",
        lambda m: {
            "NATS_TLS_CA_FILE": m.ca,
            "NATS_TLS_CERT_FILE": m.other_cert,
            "NATS_TLS_KEY_FILE": m.other_key,
        },
        "",
        "TLS: the server ",
        lambda m: "PRIVATE KEY",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_credentials_fail_serve_with_one_clear_line(
    case: str, m: Material, tmp_path: Path, whisper_stub: str
) -> None:
    kind, env_for, userinfo, expected, secret_for = BAD[case]
    with nats_server(tmp_path, server_conf(m, kind)) as url:
        nats_url = _with_userinfo(url, userinfo) if userinfo else url
        t0 = time.monotonic()
        proc = subprocess.run(
            [*CLI, "serve"],
            env=_serve_env(nats_url, whisper_stub, **env_for(m)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    # serve logs its start-up at INFO; besides that, one line: no warnings, no traceback
    lines = [line for line in proc.stderr.splitlines() if not INFO_LOG.match(line)]
    assert len(lines) == 1, proc.stderr
    (line,) = lines
    print(f"{case}: {line} ({took:.1f} s)")
    assert line.startswith("stt-service: cannot connect to NATS at nats://"), line
    assert expected in line, line
    if case == "tls-no-client-cert":  # refused in the handshake, or the server hung up after it
        assert "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE" in line, line
    if case == "tls-client-cert-of-another-ca":
        assert "(check NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE" in line, line
    assert secret_for(m) not in proc.stderr + proc.stdout
    assert took < 10, f"took {took:.1f} s"  # the first connect gives up at once, not after retries


async def test_no_server_gives_up_after_the_first_connect_timeout() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(RuntimeError) as err:
        await connect_nats(load_settings(nats_url=url), first_connect_timeout=1.0)
    assert time.monotonic() - t0 < 3
    assert str(err.value).startswith(f"cannot connect to NATS at {url}: no answer in 1 s")
    assert "\n" not in str(err.value)


async def test_tail_uses_the_credentials_from_the_environment(
    m: Material, tmp_path: Path, whisper_stub: str
) -> None:
    with nats_server(tmp_path, server_conf(m, "token")) as url:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "tail",
            "--duration",
            "1",
            env=_serve_env(url, whisper_stub, NATS_TOKEN=TOKEN),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "tailing ai.voice.transcription.*" in err.decode()


# --- configuration errors: at load time, naming the variable --------------------------------------
def _config_error(**overrides: Any) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(**overrides)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_files_name_the_variable(tmp_path: Path) -> None:
    for name in (
        "NATS_CREDS_FILE",
        "NATS_NKEY_SEED_FILE",
        "NATS_TLS_CA_FILE",
    ):
        missing = str(tmp_path / "nope")
        assert f"{name}: no such file {missing!r}" in _config_error(**{name.lower(): missing})


def test_a_url_that_is_not_a_nats_url_stops_start_up() -> None:
    text = _config_error(nats_url=f"http://alice:{PASSWORD}@127.0.0.1:4222")
    assert "NATS_URL: 'http://alice:***@127.0.0.1:4222' is not a NATS server URL" in text, text
    assert PASSWORD not in text
    load_settings(nats_url="tls://a:4222,nats://b:4222,c:4222")  # all three accepted


def test_a_secret_pasted_where_a_path_belongs_is_named_never_echoed(m: Material) -> None:
    creds = Path(m.creds_file).read_text()
    pem = Path(m.client_key).read_text()
    for name, value, looks in (
        ("nats_nkey_seed_file", m.user_seed, "an NKey seed"),
        ("nats_creds_file", creds, "a .creds file's contents"),
        ("nats_tls_ca_file", pem, "a PEM block"),
        ("nats_tls_cert_file", pem, "a PEM block"),
    ):
        extra = {"nats_tls_key_file": m.client_key} if name == "nats_tls_cert_file" else {}
        text = _config_error(**{name: value}, **extra)
        assert f"{name.upper()}: the value looks like {looks}, not a path" in text, text
        assert value.strip()[:12] not in text and value.strip()[-12:] not in text, text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_names_the_variable(m: Material, tmp_path: Path) -> None:
    path = tmp_path / "locked.creds"
    path.write_text(Path(m.creds_file).read_text())
    path.chmod(0)
    assert "NATS_CREDS_FILE: cannot read" in _config_error(nats_creds_file=str(path))


def test_malformed_creds_and_seed_files_fail_at_load(m: Material, tmp_path: Path) -> None:
    junk = tmp_path / "junk.creds"
    junk.write_text("not a creds file\n")
    assert "NATS_CREDS_FILE: " in _config_error(nats_creds_file=str(junk))
    assert "is not a NATS .creds file" in _config_error(nats_creds_file=str(junk))
    assert "NATS_NKEY_SEED_FILE: " in _config_error(nats_nkey_seed_file=str(junk))
    # a creds file is no seed file
    assert "holds no user NKey seed" in _config_error(nats_nkey_seed_file=m.creds_file)


def test_certificate_and_key_go_together(m: Material) -> None:
    assert "NATS_TLS_KEY_FILE: required with NATS_TLS_CERT_FILE" in _config_error(
        nats_tls_cert_file=m.client_cert
    )
    assert "NATS_TLS_CERT_FILE: required with NATS_TLS_KEY_FILE" in _config_error(
        nats_tls_key_file=m.client_key
    )
    mismatch = _config_error(nats_tls_cert_file=m.client_cert, nats_tls_key_file=m.other_key)
    assert "NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE: cannot load the client certificate" in mismatch
    assert "NATS_TLS_CA_FILE: " in _config_error(nats_tls_ca_file=m.nkey_seed_file)


def test_one_authentication_method(m: Material) -> None:
    text = _config_error(nats_user="alice", nats_password=PASSWORD, nats_token=TOKEN)
    assert "NATS_USER/NATS_PASSWORD and NATS_TOKEN are both set" in text
    assert PASSWORD not in text and TOKEN not in text
    text = _config_error(nats_token=TOKEN, nats_creds_file=m.creds_file)
    assert "NATS_TOKEN and NATS_CREDS_FILE are both set" in text
    text = _config_error(nats_nkey_seed_file=m.nkey_seed_file, nats_creds_file=m.creds_file)
    assert "NATS_NKEY_SEED_FILE and NATS_CREDS_FILE" in text
    text = _config_error(nats_url=f"nats://alice:{PASSWORD}@127.0.0.1:4222", nats_token=TOKEN)
    assert "NATS_TOKEN and the credentials in NATS_URL are both set" in text
    assert PASSWORD not in text and TOKEN not in text
    assert "NATS_PASSWORD: set NATS_USER too" in _config_error(nats_password=PASSWORD)


def test_serve_with_a_bad_setting_exits_2_with_one_line(tmp_path: Path, whisper_stub: str) -> None:
    env = _serve_env("nats://127.0.0.1:4222", whisper_stub, NATS_TOKEN=TOKEN, NATS_USER="alice")
    proc = subprocess.run([*CLI, "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "stt-service: invalid configuration: NATS_USER/NATS_PASSWORD and NATS_TOKEN are both "
        "set: use one NATS authentication method"
    ]


def test_secrets_stay_secret(m: Material) -> None:
    s = load_settings(nats_user="alice", nats_password=PASSWORD)
    assert PASSWORD not in repr(s) and PASSWORD not in str(s)
    s = load_settings(nats_token=TOKEN)
    assert TOKEN not in repr(s)
    assert nats_options(s)["token"] == TOKEN
    assert redact_url(f"nats://alice:{PASSWORD}@a:4222,nats://b:4222") == (
        "nats://alice:***@a:4222,nats://b:4222"
    )
    assert redact_url(f"tls://{TOKEN}@a:4222") == "tls://***@a:4222"


def test_options_for_each_method(m: Material) -> None:
    assert nats_options(load_settings()) == {}
    opts = nats_options(load_settings(nats_user="alice", nats_password=PASSWORD))
    assert opts == {"user": "alice", "password": PASSWORD}
    assert nats_options(load_settings(nats_nkey_seed_file=m.nkey_seed_file)) == {
        "nkeys_seed": m.nkey_seed_file
    }
    assert nats_options(load_settings(nats_creds_file=m.creds_file)) == {
        "user_credentials": m.creds_file
    }
    tls = nats_options(load_settings(nats_url="tls://nats.example:4222"))["tls"]
    assert tls.verify_mode.name == "CERT_REQUIRED"
    opts = nats_options(
        load_settings(
            nats_tls_ca_file=m.ca, nats_tls_cert_file=m.client_cert, nats_tls_key_file=m.client_key
        )
    )
    assert set(opts) == {"tls"}


def _traced(tmp_path: Path, conf: str) -> tuple[str, Path]:
    """``conf`` with the server tracing every protocol line to a log file."""
    log = tmp_path / "trace.log"
    return f'{conf}log_file: "{log}"\ntrace: true\ndebug: true\n', log


async def test_a_tls_url_never_sends_credentials_to_a_server_without_tls(
    m: Material, tmp_path: Path
) -> None:
    """nats-py upgrades only when the server requires TLS; a tls:// URL must mean TLS anyway."""
    conf, log = _traced(tmp_path, server_conf(m, "userpass"))
    with nats_server(tmp_path, conf) as url:
        tls_url = _with_userinfo(url, f"alice:{PASSWORD}").replace("nats://", "tls://")
        settings = load_settings(nats_url=tls_url, nats_tls_ca_file=m.ca)
        with pytest.raises(RuntimeError) as err:
            await connect_nats(settings, first_connect_timeout=5)
        refused = log.read_text()
        # the same server and credentials over nats:// (the control: the trace shows CONNECT)
        nc = await connect_nats(_with_userinfo(url, f"alice:{PASSWORD}"))
        await nc.close()
    message = str(err.value)
    assert "offers no TLS" in message and "\n" not in message and PASSWORD not in message
    assert "CONNECT" not in refused and PASSWORD not in refused
    assert "CONNECT" in log.read_text()


async def test_a_server_that_offers_tls_without_requiring_it_gets_tls(
    m: Material, tmp_path: Path
) -> None:
    tls = (
        f'tls {{ cert_file: "{m.server_cert}", key_file: "{m.server_key}", timeout: 2 }}\n'
        "allow_non_tls: true\n"
    )
    conf, log = _traced(tmp_path, tls + f'authorization {{ token: "{TOKEN}" }}\n')
    with nats_server(tmp_path, conf) as url:
        settings = load_settings(
            nats_url=url.replace("nats://", "tls://"), nats_token=TOKEN, nats_tls_ca_file=m.ca
        )
        nc = await connect_nats(settings)
        try:
            await nc.flush()
        finally:
            await nc.close()
    assert "TLS handshake complete" in log.read_text()


def test_demo_against_a_secured_server_never_shows_the_password(
    m: Material, tmp_path: Path, whisper_stub: str
) -> None:
    """`demo --nats-url` with credentials in the URL: the URL is shown redacted, and a wrong
    password is one line (exit 1), not a traceback."""
    with nats_server(tmp_path, server_conf(m, "userpass")) as url:
        proc = subprocess.run(
            [*CLI, "demo", "--nats-url", _with_userinfo(url, f"alice:{WRONG_PASSWORD}")],
            env=_serve_env(url, whisper_stub),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert WRONG_PASSWORD not in proc.stdout + proc.stderr
    assert "  NATS      nats://alice:***@127.0.0.1" in proc.stdout, proc.stdout
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and "authorization violation" in errors[0], proc.stderr


async def test_a_password_changed_on_the_server_is_one_line_not_two_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After the server's password changes, every reconnect (twice a second) is refused: the
    log says so once, and counts the rest (it said it at every attempt, forever)."""
    port = free_port()

    def server(password: str) -> subprocess.Popen[bytes]:
        path = tmp_path / f"nats-{password}.conf"
        path.write_text(
            f'listen: 127.0.0.1:{port}\nauthorization {{ user: alice, password: "{password}" }}\n'
        )
        proc = subprocess.Popen([find_nats_server(), "-c", str(path)], stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", port, 10.0)
        return proc

    proc = server(PASSWORD)
    settings = load_settings(
        nats_url=f"nats://127.0.0.1:{port}", nats_user="alice", nats_password=PASSWORD
    )
    nc = await connect_nats(settings)
    try:
        with caplog.at_level(logging.WARNING, "stt_service.bus.natsconn"):
            proc.terminate()
            proc.wait(5)
            proc = server("changed-" + PASSWORD)
            for _ in range(80):  # 4 s: about 8 refused reconnects
                await asyncio.sleep(0.05)
        lines = [r.getMessage() for r in caplog.records if r.name == "stt_service.bus.natsconn"]
        violations = [line for line in lines if "authorization violation" in line.lower()]
        assert len(violations) == 1, lines
        assert PASSWORD not in " ".join(lines)
    finally:
        await nc.close()
        proc.terminate()
        proc.wait(5)
