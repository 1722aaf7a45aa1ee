"""Which sparse formats the torch modules can store, and how a request resolves.

Only CSR has torch ops so far. ``format='bsr'`` raises NotImplementedError until
BSR ops are added next to the CSR ones in :mod:`.ops`; ``'auto'`` resolves to
CSR here, and :func:`sparsegemm.torch.sparsify` asks ``sparsegemm.plan`` (when
the package has it) whether a layer should stay dense.
"""

from __future__ import annotations

import sparsegemm

FORMAT_CHOICES = ("auto", "csr", "bsr")
TORCH_FORMATS = ("csr",)  # formats with sparsegemm:: torch ops


def resolve_format(format: str, blocksize: tuple[int, int] | None) -> tuple[str, tuple | None]:
    """The (format, blocksize) a module will store for a requested ``format``."""
    if format not in FORMAT_CHOICES:
        raise ValueError(f"format must be one of {FORMAT_CHOICES}, got {format!r}")
    if format == "bsr":
        if not hasattr(sparsegemm, "BSRMatrix"):
            raise NotImplementedError("format='bsr' needs sparsegemm.BSRMatrix, which this build "
                                      "of sparsegemm does not have; use format='csr'")
        raise NotImplementedError("format='bsr' is not wired into sparsegemm.torch yet; "
                                  "use format='csr'")
    if blocksize is not None:
        raise ValueError("blocksize applies to format='bsr' only")
    return "csr", None
