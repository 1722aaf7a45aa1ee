"""PyTorch front end: sparse drop-ins for nn.Linear (CSR, BSR or bitmap; int8 with
:class:`SparseLinearInt8`), nn.Conv2d (CSR) and nn.MultiheadAttention, and
:func:`sparsify` to convert a pruned model in place (``format='auto'`` lets
:func:`sparsegemm.plan` pick dense, CSR, the bitmap or a BSR blocksize per layer
by measuring).

Needs PyTorch (the ``sparsegemm[torch]`` extra). Importing this subpackage
registers the ``torch.ops.sparsegemm`` custom ops; load it before
``torch.export.load`` of a program that uses them.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("sparsegemm.torch needs PyTorch: pip install 'sparsegemm[torch]'") from error

from ._cache import clear_cache
from .attention import (
    SparseMultiheadAttention,
    SparseTransformerEncoderLayer,
    scaled_dot_product_attention,
    use_kernel_attention,
)
from .auto import AutoSparseConv2d, AutoSparseLinear, freeze
from .checkpoint import from_pretrained, load_sparsified
from .compact import load_sparse, save_sparse
from .layer_norm import add_layer_norm
from .modules import SparseConv2d, SparseLinear, masked_weight
from .quantized import SparseLinearInt8
from .shared_input import SharedInputGroup
from .sparsify import LayerReport, SparsifyReport, sparsify

__all__ = [
    "AutoSparseConv2d",
    "AutoSparseLinear",
    "LayerReport",
    "SparseConv2d",
    "SparseLinear",
    "SparseLinearInt8",
    "SharedInputGroup",
    "SparseMultiheadAttention",
    "SparseTransformerEncoderLayer",
    "SparsifyReport",
    "add_layer_norm",
    "clear_cache",
    "freeze",
    "from_pretrained",
    "load_sparse",
    "load_sparsified",
    "masked_weight",
    "save_sparse",
    "scaled_dot_product_attention",
    "sparsify",
    "use_kernel_attention",
]
