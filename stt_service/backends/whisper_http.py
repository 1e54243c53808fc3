"""Whisper over HTTP: an OpenAI-compatible ``POST {WHISPER_URL}/v1/audio/transcriptions`` server.

Utterances, partials and finals work as for the local model (:mod:`.utterance`); only the decode
differs: the utterance goes out as a 16 kHz mono WAV in a multipart request on one pooled httpx
client. At most ``WHISPER_HTTP_CONCURRENCY`` requests run at once, finals first, so when the server
falls behind stale partials are dropped and finals wait their turn. Finals are retried with
jittered exponential backoff on 429, 5xx and connection errors (never on other 4xx, nor on a read
timeout, where the server may still be working); a final that fails for good becomes an ``error``
naming the URL and the status. Partials are never retried: the next one or the final follows soon.
A request with no answer after ``WHISPER_HTTP_STALL_TIMEOUT_S`` plus one second per second of audio
is a stalled server (accepted, silent): it is abandoned, counted (``stt.backend.stalls``), and a
final is sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Literal

import httpx

from ..audio import Int16Array, wav_bytes
from ..config import WhisperHttpSettings
from .base import StreamParams
from .decoding import Decoded, DecodeScheduler, combine_segments
from .utterance import UtteranceStream

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.25
REPROBE_S = 5.0  # an unreachable server is probed again at most this often
BACKOFF_MAX_S = 4.0


class WhisperHTTPError(RuntimeError):
    """A request failed; ``str()`` is the message the session's ``error`` carries."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class WhisperHTTP:
    """The ``whisper-http`` backend."""

    name = "whisper-http"
    endpointing: Literal["service", "backend"] = "service"
    english_only = False

    def __init__(self, settings: WhisperHttpSettings) -> None:
        self.settings = settings
        self.url = settings.whisper_url.rstrip("/")
        self.endpoint = f"{self.url}/v1/audio/transcriptions"
        self._client: httpx.AsyncClient | None = None
        self._scheduler: DecodeScheduler | None = None
        self._verbose = True  # verbose_json until the server says it does not support it
        self.reachable: bool | None = None  # did the last request get any HTTP answer?
        self._probing: asyncio.Task[None] | None = None
        self._probed_at = 0.0
        self.stalls = 0  # requests abandoned unanswered (stt.backend.stalls)

    # --- Recognizer -----------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        headers = {"User-Agent": "stt-service"}
        if s.whisper_api_key is not None:
            headers["Authorization"] = f"Bearer {s.whisper_api_key.get_secret_value()}"
        n = s.whisper_http_concurrency
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(s.whisper_http_timeout, connect=s.whisper_http_connect_timeout),
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
        )
        self._scheduler = DecodeScheduler(self._decode, concurrency=n, name="whisper-http")
        await self.probe()

    async def probe(self) -> bool:
        """Whether the server answers at all (any HTTP status counts); logged, never fatal."""
        assert self._client is not None
        try:
            await self._client.get(
                self.url + "/", timeout=self.settings.whisper_http_connect_timeout
            )
            self.reachable = True
        except httpx.HTTPError as exc:
            self.reachable = False
            log.warning(
                "Whisper server %s does not answer yet (%s); sessions will get errors "
                "until it does",
                self.url,
                _describe(exc),
            )
        return self.reachable

    def ready(self) -> bool:
        """Started, and the server answered the last request (a server that did not is probed
        again at most every few seconds, so readiness comes back on its own)."""
        if self._scheduler is None:
            return False
        if self.reachable is False and self._probing is None:
            now = time.monotonic()
            if now - self._probed_at >= REPROBE_S:
                self._probed_at = now
                self._probing = asyncio.get_running_loop().create_task(self._reprobe())
        return self.reachable is not False

    async def _reprobe(self) -> None:
        try:
            await self.probe()
        except Exception:  # closed while probing: readiness no longer matters
            pass
        finally:
            self._probing = None

    def describe(self) -> str:
        return f"Whisper over HTTP at {self.url}"

    def languages(self) -> frozenset[str] | None:
        return None  # the server decides; a code it does not know comes back as an error

    @property
    def scheduler(self) -> DecodeScheduler:
        if self._scheduler is None:
            raise RuntimeError("WhisperHTTP.start() was not called")
        return self._scheduler

    def open_stream(self, params: StreamParams) -> UtteranceStream:
        return UtteranceStream(self, params)

    async def aclose(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.aclose()
        if self._client is not None:
            await self._client.aclose()

    # --- decoding -------------------------------------------------------------------------------
    async def _decode(
        self, samples: Int16Array, language: str | None, keyterms: tuple[str, ...], final: bool
    ) -> Decoded:
        wav = wav_bytes(samples)
        tries = 1 + (self.settings.whisper_http_retries if final else 0)
        stall_s = self.settings.whisper_http_stall_timeout_s
        deadline = stall_s + samples.size / 16000 if stall_s > 0 else None
        for attempt in range(1, tries + 1):
            try:
                return await asyncio.wait_for(self._request(wav, language, keyterms), deadline)
            except TimeoutError:
                self.stalls += 1
                failure = WhisperHTTPError(
                    f"POST {self.endpoint}: no answer within {deadline:.1f} s "
                    "(WHISPER_HTTP_STALL_TIMEOUT_S plus the audio's length): the server stalled",
                    retryable=True,
                )
                log.warning("whisper-http: %s", failure)
            except WhisperHTTPError as exc:
                failure = exc
            if not failure.retryable or attempt == tries:
                suffix = f" (after {attempt} tries)" if attempt > 1 else ""
                raise WhisperHTTPError(f"{failure}{suffix}", failure.retryable) from None
            delay = _backoff(attempt, failure.retry_after)
            log.info("whisper-http: %s; retry %d/%d in %.2f s", failure, attempt, tries - 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self, wav: bytes, language: str | None, keyterms: tuple[str, ...]
    ) -> Decoded:
        assert self._client is not None
        data = {"model": self.settings.whisper_http_model, "temperature": "0"}
        if language:
            data["language"] = language
        if keyterms:
            data["prompt"] = ", ".join(keyterms)
        while True:
            data["response_format"] = "verbose_json" if self._verbose else "json"
            try:
                response = await self._client.post(
                    self.endpoint, data=data, files={"file": ("utterance.wav", wav, "audio/wav")}
                )
            except httpx.TimeoutException as exc:
                self.reachable = not isinstance(exc, httpx.ConnectTimeout)
                raise WhisperHTTPError(
                    f"POST {self.endpoint}: {_describe(exc)}",
                    retryable=isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout),
                ) from None
            except httpx.TransportError as exc:
                self.reachable = False
                raise WhisperHTTPError(
                    f"POST {self.endpoint}: {_describe(exc)}", retryable=True
                ) from None
            self.reachable = True
            if response.status_code == 200:
                return _parse(response)
            body = response.text[:300]
            if self._verbose and response.status_code in (400, 422) and "response_format" in body:
                log.warning(
                    "%s does not support verbose_json; using json (no no_speech_prob "
                    "for the hallucination guard)",
                    self.url,
                )
                self._verbose = False
                continue
            status = f"{response.status_code} {response.reason_phrase}".strip()
            raise WhisperHTTPError(
                f"POST {self.endpoint} answered {status}: {body.strip() or '(empty body)'}",
                retryable=response.status_code == 429 or response.status_code >= 500,
                retry_after=_retry_after(response),
            )


def _parse(response: httpx.Response) -> Decoded:
    try:
        body: Any = response.json()
        text = body["text"]
    except (ValueError, KeyError, TypeError):
        raise WhisperHTTPError(
            f"{response.request.url} answered 200 without a JSON 'text': {response.text[:200]!r}",
            retryable=False,
        ) from None
    segments = body.get("segments") if isinstance(body, dict) else None
    language = body.get("language") if isinstance(body.get("language"), str) else None
    if isinstance(segments, list) and segments:
        text, confidence = combine_segments(
            (
                str(s.get("text", "")),
                float(s.get("no_speech_prob", 0.0)),
                float(s.get("avg_logprob", 0.0)),
            )
            for s in segments
            if isinstance(s, dict)
        )
        return Decoded(text, confidence, language)
    return Decoded(str(text).strip(), None, language)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(BACKOFF_MAX_S, max(0.0, float(value))) if value else None
    except ValueError:
        return None


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return retry_after
    delay: float = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.5)


def _describe(exc: Exception) -> str:
    kinds: dict[type[Exception], str] = {
        httpx.ConnectTimeout: "connect timed out",
        httpx.ReadTimeout: "no answer within the read timeout (WHISPER_HTTP_TIMEOUT)",
        httpx.WriteTimeout: "write timed out",
        httpx.PoolTimeout: "no free connection in time",
        httpx.ConnectError: "cannot connect",
    }
    kind = kinds.get(type(exc))
    detail = str(exc)
    return f"{kind} ({detail})" if kind and detail else kind or detail or type(exc).__name__
