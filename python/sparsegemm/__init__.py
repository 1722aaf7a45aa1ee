"""sparsegemm: sparse x dense matrix products that beat dense BLAS on CPUs.

The numpy/scipy API lives here; PyTorch modules are in ``sparsegemm.torch``
(optional extra) and pruning tools in ``sparsegemm.prune``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sparsegemm")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

from ._attention import attention  # noqa: E402
from ._layer_norm import layer_norm  # noqa: E402
from ._runtime import (  # noqa: E402
    _check_isa_environment,
    _check_kernel_choice_environment,
    available_isas,
    get_isa,
    get_num_threads,
    kernel_catalogue,
    set_isa,
    set_num_threads,
    show_config,
    use_isa,
)
from .formats import BitmapMatrix, BSRMatrix, CSRMatrix  # noqa: E402
from .ops import conv2d, feed_forward, linear, sddmm, sparse_mm  # noqa: E402
from .planner import Plan, plan  # noqa: E402
from .pruning import block_prune, magnitude_prune  # noqa: E402
from .quantized import Int8BitmapMatrix  # noqa: E402

_check_isa_environment()
_check_kernel_choice_environment()

__all__ = [
    "BSRMatrix",
    "BitmapMatrix",
    "CSRMatrix",
    "Int8BitmapMatrix",
    "Plan",
    "attention",
    "available_isas",
    "block_prune",
    "conv2d",
    "feed_forward",
    "get_isa",
    "get_num_threads",
    "kernel_catalogue",
    "layer_norm",
    "linear",
    "magnitude_prune",
    "plan",
    "set_isa",
    "set_num_threads",
    "sddmm",
    "show_config",
    "sparse_mm",
    "use_isa",
]
