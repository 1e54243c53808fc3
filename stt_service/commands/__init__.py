"""What a user runs: the ``stt-service`` command (:mod:`.entry`, which answers ``healthcheck``
itself through :mod:`.healthcheck`, and :mod:`.cli`, the parser), its subcommands by what they
do (:mod:`.serve_demo`: ``serve``, ``demo``, ``web``; :mod:`.send_tail`: ``send``, ``tail``;
:mod:`.operate`: ``partitions``, ``list-endpoints``, ``emulate``; :mod:`.common`: what they share),
the client they talk to a service with (:mod:`.client`), the live page (:mod:`.webdemo`,
:mod:`.webpage`), the microphone (:mod:`.mic`) and the SageMaker endpoint lister
(:mod:`.endpoints`)."""
