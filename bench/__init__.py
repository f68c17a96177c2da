"""Benchmarks: the platform measured against this machine's own limits (`make bench`)."""
