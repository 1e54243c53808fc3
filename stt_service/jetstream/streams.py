"""JetStream mode's streams and buckets: their names (:class:`Layout`), and creating or checking
them (:class:`JetStreamState`), with the session checkpoints and partition floors stored there."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from ..config import Settings
from .replay import CHECKPOINT_HEADER, decode_checkpoint, encode_checkpoint

log = logging.getLogger(__name__)

STATE_TTL_S = 3600.0  # session checkpoints and closed-session marks; floors are renewed sooner
FLOOR_RENEW_S = 600.0


class JetStreamSetupError(RuntimeError):
    """What JetStream mode needs and the server does not give; ``str()`` is one line."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Names of everything JetStream mode uses, from the settings."""

    stream: str
    partitions: int
    input_prefix: str
    output_prefix: str

    @classmethod
    def from_settings(cls, s: Settings) -> Layout:
        return cls(s.stt_js_stream, s.stt_js_partitions, s.stt_input_subject, s.stt_output_subject)

    @property
    def results(self) -> str:
        return f"{self.stream}_RESULTS"

    @property
    def leases(self) -> str:
        return f"{self.stream}_leases"

    @property
    def state(self) -> str:
        return f"{self.stream}_state"

    @property
    def transform(self) -> SubjectTransform:
        return SubjectTransform(
            src=f"{self.input_prefix}.*",
            dest=f"{self.stream}.{{{{partition({self.partitions},1)}}}}.{{{{wildcard(1)}}}}",
        )

    def partition_subject(self, k: int) -> str:
        return f"{self.stream}.{k}.*"


def partition_of(session_id: str, partitions: int) -> int:
    """The partition nats-server's ``partition(N,1)`` puts a session in (FNV-1a, 32 bit)."""
    h = 0x811C9DC5
    for b in session_id.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h % partitions


class JetStreamState:
    """The streams and buckets of JetStream mode, created or checked by :meth:`open`."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, layout: Layout, leases: KeyValue, state: KeyValue
    ) -> None:
        self.nc = nc
        self.js = js
        self.layout = layout
        self.leases = leases
        self.state = state

    @classmethod
    async def open(cls, nc: NATS, settings: Settings) -> JetStreamState:
        layout = Layout.from_settings(settings)
        js = nc.jetstream(timeout=5.0)
        try:
            await js.account_info()
        except (ServiceUnavailableError, NotFoundError):
            raise JetStreamSetupError(
                "STT_MODE=jetstream: JetStream is not enabled on the NATS server (start it "
                "with -js, or add 'jetstream {}' to its configuration), or not for this "
                "account; use STT_MODE=core for one replica without it"
            ) from None
        except Exception as exc:
            raise JetStreamSetupError(
                f"STT_MODE=jetstream: could not reach JetStream: {str(exc) or type(exc).__name__}"
            ) from None
        replicas = settings.stt_js_replicas
        audio = StreamConfig(
            name=layout.stream,
            description="stt-service inbound audio, kept for replay after a failover",
            subjects=[f"{layout.input_prefix}.*"],
            subject_transform=layout.transform,
            max_age=settings.stt_js_max_age,
            max_bytes=settings.stt_js_max_bytes,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=replicas,
            allow_direct=True,
        )
        results = StreamConfig(
            name=layout.results,
            description="stt-service: the last message published per session, with its checkpoint",
            subjects=[f"{layout.output_prefix}.*"],
            max_msgs_per_subject=1,
            max_age=STATE_TTL_S,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=replicas,
            allow_direct=True,
        )
        leases = await _ensure_bucket(
            js, layout.leases, settings.stt_js_lease_seconds, replicas, "partition leases"
        )
        state = await _ensure_bucket(js, layout.state, STATE_TTL_S, replicas, "session checkpoints")
        jsx = cls(nc, js, layout, leases, state)
        if await _ensure_stream(js, audio, layout, check_transform=True):
            # a new stream: its every message is for the replicas, even those sent before one
            # of them holds the partition (a partition without a floor starts at the end)
            for k in range(layout.partitions):
                await jsx.put_floor(k, 1)
        await _ensure_stream(js, results, layout, check_transform=False)
        return jsx

    # --- checkpoints -------------------------------------------------------------------------
    async def session_checkpoint(self, session_id: str) -> dict[str, Any] | None:
        """The newest checkpoint of a session: its key, or its last published message's header."""
        stored: dict[str, Any] | None = None
        with contextlib.suppress(NotFoundError):  # no key, or deleted
            entry = await self.state.get(f"s.{session_id}")
            stored = decode_checkpoint(entry.value)
        published: dict[str, Any] | None = None
        subject = f"{self.layout.output_prefix}.{session_id}"
        with contextlib.suppress(NotFoundError):
            msg = await self.js.get_last_msg(self.layout.results, subject, direct=True)
            published = decode_checkpoint((msg.headers or {}).get(CHECKPOINT_HEADER))
        found = [c for c in (stored, published) if c is not None]
        return max(found, key=lambda c: int(c["v"])) if found else None

    async def last_result(self, subject: str) -> bytes | None:
        """The last message published on a session's results subject, as the server stored it."""
        with contextlib.suppress(NotFoundError):
            msg = await self.js.get_last_msg(self.layout.results, subject, direct=True)
            return bytes(msg.data or b"")
        return None

    async def put_checkpoint(self, session_id: str, ckpt: Mapping[str, Any]) -> None:
        await self.state.put(f"s.{session_id}", encode_checkpoint(ckpt).encode())

    async def floor(self, k: int) -> int | None:
        try:
            entry = await self.state.get(f"p.{k}")
        except NotFoundError:
            return None
        return int(entry.value or b"0") or None

    async def put_floor(self, k: int, seq: int) -> None:
        await self.state.put(f"p.{k}", str(seq).encode())

    async def next_seq(self) -> int:
        """The stream sequence the next inbound message will get."""
        info = await self.js.stream_info(self.layout.stream)
        return int(info.state.last_seq) + 1


async def _ensure_stream(
    js: JetStreamContext, want: StreamConfig, layout: Layout, *, check_transform: bool
) -> bool:
    """Create the stream (True), or check and update the existing one (False)."""
    assert want.name is not None
    try:
        info = await js.stream_info(want.name)
    except NotFoundError:
        try:
            await js.add_stream(want)
        except BadRequestError as exc:
            raise JetStreamSetupError(
                f"STT_MODE=jetstream: could not create stream {want.name}: {exc.description} "
                "(another stream may already hold these subjects)"
            ) from None
        log.info("created JetStream stream %s", want.name)
        return True
    have = info.config
    if check_transform:
        got, expected = have.subject_transform, layout.transform
        if got is None or (got.src, got.dest) != (expected.src, expected.dest):
            raise JetStreamSetupError(
                f"STT_MODE=jetstream: stream {want.name} exists with another layout "
                f"(transform {got.dest if got else None!r}, expected {expected.dest!r}): "
                "STT_JS_PARTITIONS or STT_INPUT_SUBJECT changed; delete the stream while no "
                "session is live to change them"
            )
    changed = (have.max_age, have.max_bytes) != (want.max_age, want.max_bytes)
    if changed:
        have.max_age, have.max_bytes = want.max_age, want.max_bytes
        await js.update_stream(have)
        log.info(
            "stream %s: retention now %g s / %d bytes", want.name, want.max_age, want.max_bytes
        )
    return False


async def _ensure_bucket(
    js: JetStreamContext, name: str, ttl: float, replicas: int, what: str
) -> KeyValue:
    try:
        kv = await js.key_value(name)
    except (NotFoundError, BadRequestError):
        kv = await js.create_key_value(
            KeyValueConfig(
                bucket=name,
                description=f"stt-service {what}",
                history=1,
                ttl=ttl,
                storage=StorageType.FILE,
                replicas=replicas,
            )
        )
        log.info("created key-value bucket %s", name)
        return kv
    status = await kv.status()
    if status.ttl is not None and abs(status.ttl - ttl) > 0.01:
        raise JetStreamSetupError(
            f"STT_MODE=jetstream: bucket {name} keeps keys {status.ttl:g} s, this replica "
            f"expects {ttl:g} s (STT_JS_LEASE_SECONDS differs between replicas?); give all "
            "replicas the same value, or delete the bucket while no replica runs"
        )
    return kv
