"""Realtime ASR servers (vLLM Realtime, OpenAI Realtime): the backend (:mod:`.backend`), one
session's stream with its faults and replay (:mod:`.stream`), and the two dialects of the
protocol (:mod:`.protocol`)."""
