"""Benchmarks: scripts that print figures (training and teacher throughput), and the local
OpenAI-compatible server they and the tests measure against."""
