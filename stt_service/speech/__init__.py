"""The speech models a session runs on its audio, and the batchers that run them for many
sessions at once: the voice detector (:mod:`.vad`, Silero VAD in :mod:`.silero` or webrtcvad),
its batcher (:mod:`.voicebatch`), the end-of-turn model (:mod:`.smartturn`, Smart Turn v3.2) and
its thread (:mod:`.turnbatch`). The weights are bundled in ``stt_service/models``."""
