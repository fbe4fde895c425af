"""Benchmarks of funtask-trio: what users of a task worker care about (see README.md).

Not tests: they never run in CI. ``make bench`` or ``python -m benchmarks``
runs them all; ``python -m benchmarks.<name> --help`` tells one's options.
"""
