"""A multi-head attention module whose projections are separate modules.

``nn.MultiheadAttention`` hands its packed ``in_proj_weight`` and
``out_proj.weight`` straight to ``F.multi_head_attention_forward``, so its
projections cannot be swapped for sparse ones. This module computes the same
function with four projection modules (``q_proj``, ``k_proj``, ``v_proj``,
``out_proj``), each an ``nn.Linear`` or a :class:`SparseLinear`, and
``F.scaled_dot_product_attention`` in between. An optional ``in_proj`` holds
q, k and v stacked, so self-attention makes one product instead of three.

The attention itself runs on sparsegemm's kernel at inference
(:func:`scaled_dot_product_attention`, a drop-in for torch's), here and in
Hugging Face models through :func:`use_kernel_attention`, which ``sparsify``
calls: once the Linears are sparse, attention is a large part of what is left.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, NamedTuple, Optional

import torch.fx
import torch.nn.functional as F

import torch
from torch import Tensor, nn

from .. import _core
from .._attention import additive_mask
from .layer_norm import add_layer_norm
from .modules import linear_holding
from .ops import self_attention_direct

__all__ = ["EagerAttention", "SparseMultiheadAttention", "SparseTransformerEncoderLayer",
           "scaled_dot_product_attention", "use_kernel_attention"]

#: The name sparsegemm's attention is registered under in Hugging Face's attention interface.
HF_ATTENTION_NAME = "sparsegemm"

ProjectionConverter = Callable[[nn.Linear, str], nn.Module]


def _split_linear(weight: Tensor, bias: Optional[Tensor]) -> nn.Linear:
    linear = linear_holding(weight, bias)
    linear.weight.requires_grad_(weight.requires_grad)
    return linear


def kernel_attention_applies(query: Tensor, key: Tensor, value: Tensor, dropout_p: float,
                             is_causal: bool) -> bool:
    """Whether :func:`scaled_dot_product_attention` runs the kernel: 4-d float32 CPU
    tensors (not subclasses, fx proxies or fake tensors) with one key head per query
    head, no dropout, no causal flag, no gradient recorded and no torch.compile trace
    (these take torch's SDPA)."""
    if dropout_p or is_causal or torch.compiler.is_compiling():
        return False
    tensors = (query, key, value)
    if any(type(t) is not Tensor for t in tensors):  # fx proxies, fake and subclassed tensors
        return False
    if any(t.dtype != torch.float32 or t.device.type != "cpu" or t.layout != torch.strided
           or t.dim() != 4 for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return key.shape == value.shape and key.shape[:2] == query.shape[:2] \
        and key.shape[3] == query.shape[3]


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Optional[Tensor] = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: Optional[float] = None,
                                 enable_gqa: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` with the same arguments and result, on
    sparsegemm's kernel (:func:`sparsegemm.attention`) where
    :func:`kernel_attention_applies`, else on torch's.

    The result is a (batch, heads, rows, dims) view of a contiguous (batch, rows,
    heads, dims) tensor: the layout the output projection reads next.
    """
    if not kernel_attention_applies(query, key, value, dropout_p, is_causal):
        extra = {"enable_gqa": True} if enable_gqa else {}
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask,
                                              dropout_p=dropout_p, is_causal=is_causal,
                                              scale=scale, **extra)
    batch, heads, q_len, dims = query.shape
    out = torch.empty((batch, q_len, heads, dims), dtype=torch.float32).transpose(1, 2)
    mask = None
    if attn_mask is not None:
        mask = additive_mask(attn_mask.detach().numpy(), (batch, heads, q_len, key.shape[2]))
    if scale is None:
        scale = dims ** -0.5 if dims else 1.0
    _core.attention(query.detach().numpy(), key.detach().numpy(), value.detach().numpy(),
                    out.numpy(), mask, float(scale), torch.get_num_threads())
    return out


class EagerAttention(nn.Module):
    """``softmax(q @ k.transpose(-1, -2) * scale + mask, dim=-1) @ v`` (``/ scale`` with
    ``divide``; ``mask`` optional) on :func:`scaled_dot_product_attention` where the
    kernel applies and the mask is additive (floating point), else as written. A module,
    so that traced forwards keep it as one call (see ``layer_norm.ResidualNorm``)."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor, scale: Any,
                mask: Optional[Tensor], divide: bool) -> Tensor:
        if (isinstance(scale, (int, float)) and scale != 0
                and (mask is None or (type(mask) is Tensor and mask.is_floating_point()))
                and kernel_attention_applies(query, key, value, 0.0, False)):
            return scaled_dot_product_attention(query, key, value, attn_mask=mask,
                                                scale=float(1.0 / scale if divide else scale))
        scores = query @ key.transpose(-1, -2)
        scores = scores / scale if divide else scores * scale
        if mask is not None:
            scores = scores + mask
        return torch.softmax(scores, dim=-1) @ value


class EagerAttentionCall(NamedTuple):
    """One eager attention in a traced graph: its last node, the nodes it replaces (from
    ``output`` back), and the arguments of :class:`EagerAttention` for it."""

    output: torch.fx.Node
    replaced: list[torch.fx.Node]
    arguments: tuple[Any, ...]


_MATMULS = (operator.matmul, torch.matmul)
_SOFTMAXES = (torch.softmax, F.softmax)


def _calls(node: Any, targets: tuple[Any, ...], method: str = "") -> bool:
    if not isinstance(node, torch.fx.Node):
        return False
    if node.op == "call_function":
        return node.target in targets
    return bool(method) and node.op == "call_method" and node.target == method


def _only_user(node: Any) -> bool:
    return isinstance(node, torch.fx.Node) and len(node.users) == 1


def _softmax_input(node: torch.fx.Node) -> Any:
    """The input of a last-dimension softmax call with no dtype, else None."""
    if not _calls(node, _SOFTMAXES, "softmax") or not node.args:
        return None
    dims = [*node.args[1:2], *([node.kwargs["dim"]] if "dim" in node.kwargs else [])]
    if dims != [-1] or set(node.kwargs) - {"dim"} or len(node.args) > 2:
        return None
    return node.args[0]


def _transposed_key(node: Any) -> Any:
    """k for ``k.transpose(-1, -2)`` (or -2, -1), else None."""
    if not _calls(node, (torch.transpose,), "transpose") or node.kwargs or len(node.args) != 3:
        return None
    return node.args[0] if set(node.args[1:]) == {-1, -2} else None


def eager_attention_calls(graph: torch.fx.Graph, module: nn.Module) -> list[EagerAttentionCall]:
    """The eager attentions in ``graph`` (``module``'s traced forward):
    ``softmax(q @ k.transpose(-1, -2) [* s | / s] [+ mask], dim=-1) [-> Dropout child] @ v``,
    each intermediate used by the next step alone."""
    children = dict(module.named_children())
    calls = []
    for node in graph.nodes:
        if not _calls(node, _MATMULS) or len(node.args) != 2 or node.kwargs:
            continue
        probabilities, value = node.args
        replaced = [node]
        if (isinstance(probabilities, torch.fx.Node) and probabilities.op == "call_module"
                and type(children.get(probabilities.target)) is nn.Dropout
                and len(probabilities.args) == 1 and _only_user(probabilities)):
            replaced.append(probabilities)  # identity in eval mode, where the graph runs
            probabilities = probabilities.args[0]
        if not _only_user(probabilities):
            continue
        scores = _softmax_input(probabilities)
        if not _only_user(scores):
            continue
        replaced.append(probabilities)
        mask = None
        if _calls(scores, (operator.add, torch.add)) and len(scores.args) == 2 \
                and not scores.kwargs:
            first, second = scores.args
            chain_first = _calls(first, (operator.mul, torch.mul, operator.truediv) + _MATMULS)
            mask, chained = (second, first) if chain_first else (first, second)
            if not _only_user(chained) or not isinstance(mask, torch.fx.Node):
                continue
            replaced.append(scores)
            scores = chained
        scale: Any = 1.0
        divide = False
        if _calls(scores, (operator.mul, torch.mul)) and len(scores.args) == 2 \
                and not scores.kwargs:
            first, second = scores.args
            product, scale = (first, second) if _calls(first, _MATMULS) else (second, first)
            if not _only_user(product):
                continue
            replaced.append(scores)
            scores = product
        elif _calls(scores, (operator.truediv,)) and len(scores.args) == 2:
            product, scale = scores.args
            if not _only_user(product):
                continue
            replaced.append(scores)
            scores, divide = product, True
        if not _calls(scores, _MATMULS) or len(scores.args) != 2 or scores.kwargs:
            continue
        query, transposed = scores.args
        key = _transposed_key(transposed)
        if key is None or isinstance(scale, torch.fx.Node) and scale in replaced:
            continue
        replaced.append(scores)
        if _only_user(transposed):
            replaced.append(transposed)
        calls.append(EagerAttentionCall(node, replaced, (query, key, value, scale, mask, divide)))
    return calls


def _shape(arguments: Any) -> tuple[int, ...]:
    """The shape that ``view``/``reshape`` arguments (sizes, or one sequence of them) ask
    for, as ints (-1 left as it is)."""
    if len(arguments) == 1 and isinstance(arguments[0], (tuple, list)):
        arguments = arguments[0]
    return tuple(int(size) for size in arguments)


class SelfAttentionChain(nn.Module):
    """Self-attention as a model's forward writes it out, with its projections: query,
    key and value Linears over one input, each split into heads (``view`` or ``reshape``
    to (batch, length, heads, head size), then ``transpose(1, 2)``), eager attention
    (:class:`EagerAttention`, no mask), the heads merged back (``transpose(1, 2)``, then
    ``reshape`` to (batch, length, width)), and the output Linear.

    Where query, key and value are stacked as one product (a ``SharedInputGroup``) and it
    and the output Linear would run the float32 CSR kernel directly, the whole chain is one
    kernel call (:func:`~sparsegemm.torch.ops.self_attention_direct`); else its steps run
    one by one, as written. Between separate calls the Python in between ran on caches
    the products had just filled."""

    def __init__(self, query: nn.Module, key: nn.Module, value: nn.Module,
                 output: nn.Module) -> None:
        super().__init__()
        self.query, self.key, self.value, self.output = query, key, value, output
        self.attention = EagerAttention()
        self.one_calls = 0  # forwards that ran as one kernel call

    #: False: the steps one by one always, each projection a module call of its own.
    one_call = True

    def forward(self, x: Tensor, head_shapes: tuple[Any, Any, Any], context_shape: Any,
                scale: Any, divide: bool) -> Tensor:
        out = self._one_call(x, head_shapes, context_shape, scale, divide) if self.one_call \
            else None
        if out is not None:
            return out
        heads = [projection(x).reshape(_shape(shape)).transpose(1, 2)
                 for projection, shape in zip((self.query, self.key, self.value), head_shapes)]
        context = self.attention(*heads, scale, None, divide)
        return self.output(context.transpose(1, 2).reshape(_shape(context_shape)))

    def _one_call(self, x: Tensor, head_shapes: tuple[Any, Any, Any], context_shape: Any,
                  scale: Any, divide: bool) -> Tensor | None:
        group = getattr(self.query, "_shared_input", None)
        if (type(x) is not Tensor or x.dim() != 3 or group is None
                or [id(m) for m in group.members] != [id(self.query), id(self.key), id(self.value)]
                or isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale == 0):
            return None
        batch, length, width = x.shape
        shape = _shape(head_shapes[0])
        if (len(shape) != 4 or shape[:2] != (batch, length) or shape[2] * shape[3] != width
                or min(shape) <= 0 or any(_shape(s) != shape for s in head_shapes[1:])
                or _shape(context_shape) not in ((batch, length, width), (batch, length, -1))
                or group.sizes != [width] * 3):
            return None
        stacked = group.stacked_module()
        if stacked is None:
            return None
        out = self_attention_direct(x, (stacked, self.output), batch, shape[2],
                                    1.0 / scale if divide else scale)
        if out is None:
            return None
        group.stacked_products += 1
        self.one_calls += 1
        return out.view(batch, length, -1)


class SelfAttentionChainCall(NamedTuple):
    """One :class:`SelfAttentionChain` in a traced graph: the output Linear's call, the
    nodes it replaces (from there back, each the only user of the next), the four
    Linears' names, and the chain's arguments after x."""

    output: torch.fx.Node
    replaced: list[torch.fx.Node]
    projections: tuple[str, str, str, str]
    input: torch.fx.Node
    arguments: tuple[Any, ...]


def _swaps_heads(node: Any) -> bool:
    """True for ``t.transpose(1, 2)`` (or 2, 1) of one tensor, with no other user."""
    return (_calls(node, (torch.transpose,), "transpose") and not node.kwargs
            and len(node.args) == 3 and set(node.args[1:]) == {1, 2} and _only_user(node))


def _reshapes(node: Any) -> bool:
    return (_calls(node, (torch.reshape,), "reshape") or _calls(node, (), "view")) \
        and not node.kwargs and len(node.args) >= 2 and _only_user(node)


def self_attention_chains(graph: torch.fx.Graph, attention_target: str,
                          children: dict[str, nn.Module]) -> list[SelfAttentionChainCall]:
    """The calls of ``attention_target`` (an :class:`EagerAttention` in ``graph``) with no
    mask that sit in a :class:`SelfAttentionChain`: q, k and v each
    ``transpose(view(Linear(x), shape), 1, 2)`` of three distinct Linear children over one
    x, and the result ``Linear(reshape(transpose(result, 1, 2), shape))``."""
    chains = []
    for node in graph.nodes:
        if node.op != "call_module" or node.target != attention_target \
                or len(node.args) != 6 or node.args[4] is not None or not _only_user(node):
            continue
        heads, shapes, replaced = node.args[:3], [], []
        for head in heads:
            split = head.args[0] if _swaps_heads(head) else None
            projection = split.args[0] if _reshapes(split) else None
            if not (isinstance(projection, torch.fx.Node) and projection.op == "call_module"
                    and _only_user(projection) and len(projection.args) == 1
                    and not projection.kwargs):
                break
            shapes.append(tuple(split.args[1:]))
            replaced += [head, split, projection]
        else:
            merged = next(iter(node.users))
            merge = next(iter(merged.users)) if _swaps_heads(merged) else None
            output = next(iter(merge.users)) if _reshapes(merge) else None
            names = [str(n.target) for n in replaced[2::3]]
            x = replaced[2].args[0]
            if (isinstance(output, torch.fx.Node) and output.op == "call_module"
                    and output.args == (merge,) and not output.kwargs
                    and all(p.args[0] is x for p in replaced[2::3]) and len(set(names)) == 3
                    and all(hasattr(children.get(n), "direct_csr_operands")
                            for n in (*names, output.target))):
                chains.append(SelfAttentionChainCall(
                    output, [output, merge, merged, node, *replaced],
                    (*names, str(output.target)), x,
                    (tuple(shapes), tuple(merge.args[1:]), node.args[3], node.args[5])))
    return chains


def hf_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                         attention_mask: Optional[Tensor], dropout: float = 0.0,
                         scaling: Optional[float] = None, is_causal: Optional[bool] = None,
                         **kwargs) -> tuple[Tensor, None]:
    """Hugging Face's attention-interface function for sparsegemm's kernel: the
    arguments and result of ``transformers``' ``sdpa_attention_forward``, to which it
    hands what the kernel does not run (see :func:`kernel_attention_applies`)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if is_causal is None:  # as sdpa_attention_forward decides it
        is_causal = (query.shape[2] > 1 and attention_mask is None
                     and getattr(module, "is_causal", True))
    if kwargs.get("output_attentions") or not kernel_attention_applies(
            query, key, value, dropout, bool(is_causal)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    out = scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
    return out.transpose(1, 2), None  # (batch, rows, heads, dims), contiguous


def _register_hf_attention() -> bool:
    """Registers :func:`hf_attention_forward` (and SDPA's boolean masks) under
    ``HF_ATTENTION_NAME``; False where transformers lacks the attention interface."""
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return False
    ALL_ATTENTION_FUNCTIONS.register(HF_ATTENTION_NAME, hf_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(HF_ATTENTION_NAME, sdpa_mask)
    return True


def use_kernel_attention(model: nn.Module) -> str:
    """Runs ``model``'s attention on sparsegemm's kernel at inference; returns what it did.

    Each Hugging Face model in ``model`` (``model`` itself, or one it wraps, as
    sentence-transformers does) that is set to torch's SDPA switches to the
    ``"sparsegemm"`` attention implementation (``set_attn_implementation``), which
    hands training, dropout, causal masks without a mask tensor, ``output_attentions``
    and non-float32 inputs back to SDPA. :class:`SparseMultiheadAttention` modules use
    the kernel already. ``set_attn_implementation("sdpa")`` on those models undoes it.
    """
    candidates, already = [], []
    pending = [("", model)]
    while pending:  # outermost Hugging Face models first: each switches its submodels
        name, module = pending.pop()
        current = getattr(getattr(module, "config", None), "_attn_implementation", None)
        if hasattr(module, "set_attn_implementation") and current in ("sdpa", HF_ATTENTION_NAME):
            (already if current == HF_ATTENTION_NAME else candidates).append(name or "the model")
            continue
        pending.extend((f"{name}.{child}" if name else child, sub)
                       for child, sub in reversed(list(module.named_children())))
    if candidates and not _register_hf_attention():
        return "attention: torch SDPA (this transformers has no attention interface)"
    switched, kept = [], []
    for name in candidates:
        target = model if name == "the model" else model.get_submodule(name)
        # Models that call their own attention code (T5 in transformers 5) do not take
        # a registered function; they keep SDPA.
        if not getattr(type(target), "_supports_attention_backend", False):
            kept.append(f"{name}: {type(target).__name__} does not take attention functions")
            continue
        try:
            target.set_attn_implementation(HF_ATTENTION_NAME)
        except (ValueError, TypeError, ImportError) as error:
            kept.append(f"{name}: {error}")
            continue
        switched.append(name)
    if kept and not switched:
        return f"attention: torch SDPA ({'; '.join(kept)})"
    if switched:
        where = "" if switched == ["the model"] else f" in {', '.join(switched)}"
        return (f"attention: sparsegemm kernel{where} (was torch SDPA; training falls back "
                f"to SDPA)")
    return "attention: sparsegemm kernel (already)" if already else ""


class SparseMultiheadAttention(nn.Module):
    """``nn.MultiheadAttention`` with separate (possibly sparse) projections.

    Same forward signature and results as ``nn.MultiheadAttention`` without
    ``bias_k``/``bias_v``/``add_zero_attn``. Build it with :meth:`from_dense`.
    """

    # nn.TransformerEncoderLayer reads this before taking its fused dense path,
    # which needs a packed in-projection; there is none here, so it stays off.
    _qkv_same_embed_dim = False
    #: Attention on sparsegemm's kernel at inference (False: torch's SDPA always).
    kernel_attention = True
    #: Self-attention with CSR projections as one kernel call (see _fused_self_attention;
    #: False: three calls, each projection a module call of its own).
    one_call = True

    def __init__(self, q_proj: nn.Module, k_proj: nn.Module, v_proj: nn.Module,
                 out_proj: nn.Module, num_heads: int, *, dropout: float = 0.0,
                 batch_first: bool = False, in_proj: nn.Module | None = None):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = q_proj, k_proj, v_proj, out_proj
        # Optional: q, k and v stacked ((3 * embed_dim) x embed_dim), one product in place of
        # three when query, key and value are the same tensor (self-attention).
        self.in_proj = in_proj
        self.embed_dim = q_proj.out_features
        if self.embed_dim % num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = self.embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first

    @classmethod
    def from_dense(cls, mha: nn.MultiheadAttention,
                   convert: ProjectionConverter | None = None) -> SparseMultiheadAttention:
        """Split ``mha``'s projections; ``convert(linear, name)`` maps each of
        'q_proj', 'k_proj', 'v_proj', 'out_proj' to its module (default:
        :meth:`SparseLinear.from_dense`). ``mha`` is not modified.
        """
        from .modules import SparseLinear

        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"from_dense needs an nn.MultiheadAttention, got {type(mha).__name__}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError(
                "SparseMultiheadAttention does not support add_bias_kv or add_zero_attn"
            )
        if convert is None:
            def convert(linear: nn.Linear, name: str) -> nn.Module:
                return SparseLinear.from_dense(linear)
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.split(e)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = mha.in_proj_bias.split(e) if mha.in_proj_bias is not None else (None,) * 3
        projections = [convert(_split_linear(w.detach(), b if b is None else b.detach()), name)
                       for w, b, name in zip(weights, biases, ("q_proj", "k_proj", "v_proj"))]
        out = _split_linear(mha.out_proj.weight.detach(),
                            None if mha.out_proj.bias is None else mha.out_proj.bias.detach())
        return cls(*projections, convert(out, "out_proj"), mha.num_heads, dropout=mha.dropout,
                   batch_first=mha.batch_first)

    @property
    def in_proj_weight(self) -> Tensor:
        """The packed (3 * embed_dim, embed_dim) q, k, v weight of ``nn.MultiheadAttention``:
        a dense copy, read-only, built on each access (for code that reads it)."""
        return torch.cat([p.weight.detach() for p in (self.q_proj, self.k_proj, self.v_proj)])

    @property
    def in_proj_bias(self) -> Optional[Tensor]:
        """The packed q, k, v bias (a copy), or None when the projections have none."""
        biases = [p.bias for p in (self.q_proj, self.k_proj, self.v_proj)]
        return None if any(b is None for b in biases) else torch.cat([b.detach() for b in biases])

    def _attention_mask(self, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                        batch: int, target: int, source: int, dtype: torch.dtype
                        ) -> Optional[Tensor]:
        """One additive float mask (N, H, L, S) from MHA's masks (True = masked out)."""
        def additive(mask: Tensor) -> Tensor:
            if mask.dtype == torch.bool:
                return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    mask, float("-inf"))
            return mask.to(dtype)

        merged = None
        if attn_mask is not None:
            mask = additive(attn_mask)
            if mask.dim() == 3:  # (N * H, L, S)
                mask = mask.view(batch, self.num_heads, target, source)
            merged = mask
        if key_padding_mask is not None:
            padding = additive(key_padding_mask).view(batch, 1, 1, source)
            merged = padding if merged is None else merged + padding
        return merged

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        if (not need_weights and attn_mask is None and key_padding_mask is None
                and not is_causal and query is key and key is value
                and self.in_proj is not None and self.kernel_attention and self.one_call
                and not self.training):
            fused = self._fused_self_attention(query)
            if fused is not None:
                return fused, None
        unbatched = query.dim() == 2  # (L, E): one sequence, whatever batch_first says
        if unbatched:
            q_in, k_in, v_in = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:  # the projections run on (N, L, E) either way
            q_in, k_in, v_in = query, key, value
        else:
            q_in, k_in, v_in = (t.transpose(0, 1) for t in (query, key, value))
        batch, target, source = q_in.shape[0], q_in.shape[1], k_in.shape[1]

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        if self.in_proj is not None and query is key and key is value:
            q, k, v = (heads(t) for t in self.in_proj(q_in).split(self.embed_dim, dim=-1))
        else:
            q, k, v = heads(self.q_proj(q_in)), heads(self.k_proj(k_in)), heads(self.v_proj(v_in))
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        causal_only = is_causal and key_padding_mask is None and not need_weights
        mask = None if causal_only else self._attention_mask(
            attn_mask, key_padding_mask, batch, target, source, q.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) * (self.head_dim ** -0.5)
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            context = F.dropout(weights, dropout) @ v if dropout else weights @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            sdpa = (scaled_dot_product_attention if self.kernel_attention
                    else F.scaled_dot_product_attention)
            context = sdpa(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal_only)
        out = self.out_proj(context.transpose(1, 2).reshape(batch, target, self.embed_dim))
        if unbatched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def _fused_self_attention(self, query: Tensor) -> Tensor | None:
        """Self-attention in one kernel call (``_core.csr_self_attention``: the stacked
        q, k, v product, attention and the output product back to back) where both
        projections would run the float32 CSR kernel directly and attention the kernel;
        else None. Between three calls, the Python in between ran on caches the products
        had just filled: on a BERT-base encoder layer at 128 tokens, 90% sparse, one call
        made the layer about 0.1 ms (3-4%) faster (Xeon, 2 threads)."""
        if query.dim() not in (2, 3) or type(query) is not Tensor:
            return None
        batched = query.dim() == 3
        x = query if not batched or self.batch_first else query.transpose(0, 1)
        batch = x.shape[0] if batched else 1
        y = self_attention_direct(x, (self.in_proj, self.out_proj), batch, self.num_heads,
                                  self.head_dim ** -0.5)
        if y is None:
            return None
        if not batched:
            return y
        y = y.view(batch, x.shape[1], -1)
        return y if self.batch_first else y.transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, batch_first={self.batch_first}")


class SparseTransformerEncoderLayer(nn.TransformerEncoderLayer):
    """An ``nn.TransformerEncoderLayer`` with sparse projections: the same parameters,
    state_dict and result, with a forward that goes straight to torch's layer-by-layer
    path when no mask is given.

    ``sparsify`` gives a plain ``nn.TransformerEncoderLayer`` with converted children
    this class and changes nothing else. torch's forward first checks whether its fused
    dense kernel applies (reading every projection's bias, walking every submodule for
    hooks), which with sparse projections it never does. With ``residual_norm_kernel``
    (set by ``sparsify(fuse_layer_norm=True)``, the default), a post-norm layer's two
    ``norm(x + sublayer(x))`` run as one kernel call each (:func:`add_layer_norm`).
    After the sparse products the interpreter runs on cold caches, so the checks cost
    more than they look: on a BERT-base layer at 128 tokens, 90% sparse, both changes
    made it about 0.1 ms (4%) faster (Xeon, 2 threads). With a mask, torch's forward runs
    as before (sparsify's pre-hook keeps it off the fused dense path).
    """

    #: Post-norm residual adds and LayerNorms in one kernel call (see the class doc).
    residual_norm_kernel = False

    def forward(self, src: Tensor, src_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None,
                is_causal: bool = False) -> Tensor:
        if src_mask is not None or src_key_padding_mask is not None:
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), None, None, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        attended = self._sa_block(x, None, None, is_causal=is_causal)
        if not self.residual_norm_kernel:
            x = self.norm1(x + attended)
            return self.norm2(x + self._ff_block(x))
        x = add_layer_norm(attended, x, self.norm1)
        return add_layer_norm(self._ff_block(x), x, self.norm2)
