"""Benchmark harness: the gateway's added latency and CPU cost, measured
against the same fake upstream called directly. Run `python bench/run.py`."""
