"""``sparsegemm bench``: on this machine, when do pruned weights beat dense BLAS GEMM?

Modules: :mod:`.workloads` (shapes, pruning, suites), :mod:`.contenders` (the
registry of implementations), :mod:`.harness` (checked, interleaved timing),
:mod:`.suite` (runs a grid), :mod:`.analysis` (break-even), :mod:`.results`,
:mod:`.report`, :mod:`.plot`, :mod:`.compare`, :mod:`.e2e` and :mod:`.cli`.
Torch is imported only by the contenders and suites that need it.
"""

from .cli import main

__all__ = ["main"]
