"""Benchmark harness: seed a database, run ours against two baselines under wrk, report (not shipped)."""
