"""Deepgram's streaming models over SageMaker or Deepgram's API: the stream they share
(:mod:`.backend`), Flux (:mod:`.flux`, ``v2/listen``, its protocol in :mod:`.flux_protocol`) and
Nova (:mod:`.nova`, ``v1/listen``, :mod:`.nova_protocol`)."""
