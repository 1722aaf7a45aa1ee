"""sparsegemm.prune: pruning toolkit in pure PyTorch.

Feels like ``torch.nn.utils.prune``: ``amount`` is a fraction or a count (of
all units: see :mod:`sparsegemm.pruning`, the numpy core whose ranking, edge
block and tie rules every criterion here shares),
masks are ``weight_orig`` + ``weight_mask`` buffers attached by torch's own
``CustomFromMask`` machinery, and :func:`remove` finalises.  Every criterion
ends in one contract, which is what ``sparsegemm.torch.sparsify`` consumes:
**a dense weight with zeros** (``weight_orig * weight_mask`` while masks are
attached, a plain ``weight`` after :func:`remove`).

Quick start::

    from sparsegemm import prune
    prune.prune_model(model, 0.9, skip_first_last=False)            # global L1, 90 % of all
    prune.prune_model(model, 0.9)                # 90 % of all but the first and last (warns)
    prune.prune_model(model, 0.8, prune.BlockNorm((4, 1)))          # 4x1 blocks
    prune.prune_model(model, criterion=prune.NM(2, 4))              # 2:4
    prune.prune_model(model, 0.5, prune.ChannelNorm(2), scope="layer")
    prune.prune_pretrained(bert, calibration, 0.5, method="sparsegpt", pattern="2:4")
    small = prune.thin(model)                                       # drop pruned channels
    small = prune.prune_structure(bert, calibration, 0.5)   # half the FFN neurons and heads
    prune.remove(model)                                             # finalise

Weights of convolutions are treated as ``out x (in*kh*kw)`` matrices
(``weight.reshape(out, -1)``) for blocks and N:M; see :mod:`.criteria`.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sparsegemm.prune needs PyTorch: pip install 'sparsegemm[torch]'. Without torch, "
        "sparsegemm.pruning (magnitude_prune, block_prune) prunes numpy arrays."
    ) from error


from .api import (
    PRUNABLE_TYPES,
    apply_mask,
    apply_masks,
    clone_model,
    compute_num_to_prune,
    keep_masks,
    prunable_layers,
    prune_model,
    prune_module,
    remove,
    sparsity,
)
from .calibrated import (
    SparsityPattern,
    Wanda,
    call_model,
    find_blocks,
    owl_sparsities,
    parse_pattern,
    prune_pretrained,
    sparsegpt_prune,
    wanda_importance,
)
from .criteria import (
    NM,
    Activation,
    BlockNorm,
    ChannelNorm,
    Criterion,
    Custom,
    Magnitude,
    Taylor,
    measure_activations,
)
from .distill import distill, model_output
from .schedule import AGPSchedule, agp_sparsity, gradual_prune, one_shot
from .sensitivity import format_table, plot_sensitivity, sensitivity_analysis
from .structured import TransformerBlockLayout, block_layouts, prune_structure
from .thinning import dead_channels, thin

__all__ = [
    # criteria
    "Criterion",
    "Magnitude",
    "BlockNorm",
    "NM",
    "ChannelNorm",
    "Activation",
    "Taylor",
    "Custom",
    "measure_activations",
    "Wanda",
    # calibration pruning of pretrained models
    "prune_pretrained",
    "SparsityPattern",
    "parse_pattern",
    "find_blocks",
    "owl_sparsities",
    "sparsegpt_prune",
    "wanda_importance",
    "call_model",
    # recovery
    "distill",
    "model_output",
    # scope, masks, finalise
    "PRUNABLE_TYPES",
    "prunable_layers",
    "prune_model",
    "prune_module",
    "compute_num_to_prune",
    "apply_mask",
    "apply_masks",
    "keep_masks",
    "clone_model",
    "remove",
    "sparsity",
    # schedules
    "agp_sparsity",
    "AGPSchedule",
    "one_shot",
    "gradual_prune",
    # sensitivity
    "sensitivity_analysis",
    "format_table",
    "plot_sensitivity",
    # thinning
    "thin",
    "dead_channels",
    # structured pruning of transformer blocks (FFN neurons, heads), thinned
    "prune_structure",
    "block_layouts",
    "TransformerBlockLayout",
]
