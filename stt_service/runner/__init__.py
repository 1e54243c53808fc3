"""The session runner: the I/O shell around the session core.

:mod:`.worker` runs sessions (their actions, recognizer pumps, publishing, ticks, drain);
:mod:`.inlet` is how messages reach it (the core subscription here; JetStream mode's partitions in
:mod:`stt_service.jetstream`); :mod:`.limits` says what it refuses, :mod:`.stats` counts what it
did, :mod:`.health` answers ``/healthz`` and ``/readyz``, :mod:`.serve` puts them together for
``stt-service serve``."""
