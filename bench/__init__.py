"""Benchmarks of the project's detector against reference detectors (not part of the installed package).

See docs/BENCHMARKS.md and ../shared/bench/PROTOCOL.md. Needs the `bench` extra (PyOD).
"""
