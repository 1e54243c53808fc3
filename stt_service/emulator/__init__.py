"""Local stand-ins for remote recognizers, for tests, benchmarks and offline development."""
