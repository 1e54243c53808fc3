"""JetStream mode (``STT_MODE=jetstream``): many replicas, each session on exactly one of them.

The design, all of it on NATS itself:

- **Affinity.** Clients keep publishing plain core-NATS messages to ``{input}.{session}``. A stream
  (``STT_JS_STREAM``) captures them and, by a subject transform, stores each one under
  ``{stream}.{partition}.{session}``, where the server computes ``partition`` from the session id
  (``{{partition(N,1)}}``). Every message of a session lands in one partition, in order.
- **Ownership.** Replicas share the partitions through leases in a key-value bucket
  (``{stream}_leases``): ``p.{k}`` holds the owner's id and ``w.{id}`` says a replica is alive;
  both expire ``STT_JS_LEASE_SECONDS`` after their last renewal. Each replica holds about
  ``partitions / replicas`` of them (:func:`plan`); a new replica gets its share from the others,
  a dead one's leases expire and the survivors take them.
- **Consumption.** The owner reads each partition with an ordered consumer, starting from the
  partition's *floor*: the oldest message some live session may still need.
- **Checkpoints.** For every session the owner keeps a replay point: the inbound message after
  which nothing heard so far is unfinished (speech transcribed into a published final, or silence),
  with the session's state at that point. It is stored in a second bucket (``{stream}_state``,
  key ``s.{session}``) at most once per 5 s, and in a header (``Stt-Checkpoint``) on every message
  the session publishes, which a results stream (``{stream}_RESULTS``, the last message per
  session) keeps. So the newest checkpoint and "what was published" cannot disagree: they travel
  in one message. A new owner restores each session from the newer of the two, replays the
  inbound messages after its replay point, and the session core publishes none of what was
  already published (finals, interrupts); transcript numbering goes on where it stopped.
- **Retention.** Inbound audio is kept ``STT_JS_MAX_AGE`` seconds and ``STT_JS_MAX_BYTES`` at
  most; replay needs only the seconds since each session's last replay point.

Its modules: :mod:`.streams` (the stream and buckets), :mod:`.leases` (who serves which
partition), :mod:`.replay` (replay points and checkpoints), :mod:`.inlet` (the way in that the
session runner, :class:`~stt_service.runner.worker.Worker`, is
given in this mode: consuming partitions,
resuming sessions, storing checkpoints, holding publishes while a lease is in doubt, hand-over).
"""

from .leases import Leases, lease_table, partition_owners, plan, worker_id
from .replay import (
    CHECKPOINT_HEADER,
    ReplayPoint,
    ReplayTracker,
    decode_checkpoint,
    encode_checkpoint,
)
from .streams import (
    FLOOR_RENEW_S,
    STATE_TTL_S,
    JetStreamSetupError,
    JetStreamState,
    Layout,
    partition_of,
)

__all__ = [
    "CHECKPOINT_HEADER",
    "FLOOR_RENEW_S",
    "STATE_TTL_S",
    "JetStreamSetupError",
    "JetStreamState",
    "Layout",
    "Leases",
    "ReplayPoint",
    "ReplayTracker",
    "decode_checkpoint",
    "encode_checkpoint",
    "lease_table",
    "partition_of",
    "partition_owners",
    "plan",
    "worker_id",
]
