"""The per-session state machine, sans-I/O: inputs and time in, actions out.

Nothing here touches NATS, asyncio or the clock; ``now`` is epoch seconds supplied by the caller.
:class:`Session` (:mod:`.core`) wires the parts, each in its own module and owning its state:

- :mod:`.inputs` and :mod:`.actions`: what goes in (:meth:`Session.feed`) and what comes out;
- :mod:`.config`: :class:`SessionConfig`, the settings as the core reads them;
- :mod:`.intake`: chunks to 16 kHz frames with the voice detector's verdicts, the audio clock;
- :mod:`.segmenter`: utterances as named states where the service ends them, with
  :mod:`.endpoint` (the silence rules), :mod:`.turns` (the end-of-turn model's decision) and
  :mod:`.turnmap` (turns that go on after a long pause); :mod:`.passthrough` where the backend
  ends its own turns;
- :mod:`.interrupts`: barge-in, with :mod:`.interrupt` (the voice rule) and :mod:`.bargein`
  (its stages, taking an interrupt back);
- :mod:`.results`: numbering, the failover floor, latency; :mod:`.record`: one record per
  utterance in flight;
- :mod:`.snapshot`: the typed failover state JetStream mode checkpoints.
"""

from .actions import (
    Action,
    Close,
    EndUtterance,
    Measure,
    PredictTurn,
    Publish,
    Reconfigure,
    SendAudio,
    Speculate,
)
from .config import SessionConfig
from .core import Session
from .endpoint import reads_finished
from .inputs import TICK, VOICE_READY, Input, Shutdown, Tick, TurnVerdict, VoiceReady
from .snapshot import Progress, Snapshot

__all__ = [
    "TICK",
    "VOICE_READY",
    "Action",
    "Close",
    "EndUtterance",
    "Input",
    "Measure",
    "PredictTurn",
    "Progress",
    "Publish",
    "Reconfigure",
    "SendAudio",
    "Session",
    "SessionConfig",
    "Shutdown",
    "Snapshot",
    "Speculate",
    "Tick",
    "TurnVerdict",
    "VoiceReady",
    "reads_finished",
]
