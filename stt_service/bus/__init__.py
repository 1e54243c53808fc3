"""NATS: the connection (:mod:`.natsconn`), its credentials and TLS (:mod:`.natsauth`), and the
embedded ``nats-server`` for the demo, tests and benchmarks (:mod:`.embedded`)."""
