"""Benchmarks (``make bench``). Each ``bench/bench_*.py`` module has ``main() -> None`` that
prints its own table; ``python -m bench`` runs them all in name order."""
