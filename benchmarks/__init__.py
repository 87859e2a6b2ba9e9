"""Ostiary benchmarks: ``make bench`` (or ``python -m benchmarks [NAME ...]``) runs them.

Each ``bench_<name>.py`` module here defines ``main(argv=None)`` and prints its results as ratios against a
baseline measured in the same run (STYLE §3.1), so numbers from different machines stay comparable. The runner
is :mod:`benchmarks.__main__`.
"""
