"""Benchmarks: each figure measures chutes beside a baseline in the same run."""
