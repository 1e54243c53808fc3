"""Streaming speech-to-text over NATS."""

__version__ = "0.1.0"
