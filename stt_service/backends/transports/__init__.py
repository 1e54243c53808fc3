"""Duplex transports a streaming recognizer protocol runs over."""
