"""Benchmarks: each prints a table and writes its JSON under bench/results/."""
