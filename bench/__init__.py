"""Benchmarks of the pipeline with every protection on (``make bench``, ``python -m bench``).

One module per benchmark (``publish``, ``decide``, ``ledger``, ``verify``, ``replay``, ``erase``,
``keys``), each a ``run(env, scale) -> list[Row]`` that measures its figure beside a baseline in
the same run; :mod:`bench.runner` prints the table and writes ``bench/results/latest.json``.
"""

from bench.base import Row, Scale, Target

__all__ = ["Row", "Scale", "Target"]
