"""Benchmark harness for Sluice: fake upstream, load generators, peers and reports."""
