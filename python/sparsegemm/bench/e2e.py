"""End-to-end suite: whole PyTorch blocks, dense against pruned and sparsified.

Each model is magnitude-pruned (its Linear and Conv2d weights, and attention's
packed input projection), which gives the dense reference; a copy is converted
with ``sparsegemm.torch.sparsify`` and must give the same output before it is
timed. ``sparsify`` is imported only here, when the suite runs, so the rest of
the benchmark works without it (and without torch).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .harness import HarnessSettings, WrongResult, check_output, measure
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
)


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


MODELS = (
    E2EModel("mlp 1024-4096-4096-4096-1024 (batch 64)", _mlp, 4096, "mlp", 3.0, 64),
    E2EModel("bert-base encoder layer (seq 128, batch 1)", _bert_layer, 3072, "bert", 2.0, 128),
    # batch_hint: a 1x1 convolution's product has batch * H * W columns.
    E2EModel("resnet bottleneck 256ch 56x56 (batch 1)", _bottleneck, 576, "resnet", 1.5, 56 * 56),
)
MODELS_BY_KEY = {spec.key: spec for spec in MODELS}


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
    """Keyword arguments for ``sparsegemm.torch.sparsify``: ``format``, plus ``blocksize``
    (the pruning block) for 'bsr', and for 'auto', which times layers, ``batch_hint``
    (Linear layers) and ``example_inputs`` (convolutions are timed on their real input)."""
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
) -> Any:
    converted = copy.deepcopy(model)
    result = sparsify(converted, **sparsify_options(fmt, pattern, batch_hint, example_inputs))
    return converted if result is None else result  # in-place or returning, either works


def run_e2e(
    sparsities: tuple[float, ...],
    pattern: Pattern,
    threads: int,
    settings: HarnessSettings,
    models: tuple[E2EModel, ...] | None = None,
    formats: tuple[str, ...] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per model, sparsity and format) and notes. Empty rows when it cannot run.

    ``models`` defaults to :data:`MODELS`; ``formats`` to auto and csr (and bsr
    with a block pattern).
    """
    sparsify, reason = load_sparsify()
    if sparsify is None:
        return [], [f"end-to-end suite skipped: {reason}"]
    import torch

    if formats is None:
        formats = ("auto", "csr") + (("bsr",) if pattern.blocksize else ())
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
                    calls = {"dense": lambda model=dense, x=x: model(x)}
                    fmt_rows = {}
                    for fmt in formats:
                        row = fmt_rows[fmt] = {
                            "model": spec.name,
                            "input_shape": "x".join(map(str, x.shape)),
                            "sparsity": sparsity,
                            "pattern": pattern.name,
                            "format": fmt,
                            "floor": spec.floor,
                            "status": "ok",
                            "detail": "",
                        }
                        try:
                            model = _sparsified(sparsify, dense, fmt, pattern, spec.batch_hint, x)
                            row["report"] = str(getattr(model, "sparsegemm_report", ""))
                            row["max_rel_error"] = check_output(model(x), reference, spec.inner_dim)
                        except WrongResult as mismatch:
                            row.update(status="wrong", detail=str(mismatch))
                            continue
                        except Exception as error:  # noqa: BLE001  (report it, keep going)
                            row.update(status="error", detail=f"{type(error).__name__}: {error}")
                            continue
                        calls[fmt] = lambda model=model, x=x: model(x)
                    measured = measure(calls, ["dense"], settings)
                    dense_time = measured.timings["dense"].median
                    for fmt, row in fmt_rows.items():
                        timing = measured.timings.get(fmt)
                        if timing is None:
                            row.update(dense_time_s=dense_time, speedup=math.nan)
                        else:
                            q1, q3 = timing.quartiles
                            row.update(
                                dense_time_s=dense_time,
                                sparse_time_s=timing.median,
                                speedup=dense_time / timing.median,
                                sparse_q1_s=q1,
                                sparse_q3_s=q3,
                                steady=measured.steady,
                            )
                        rows.append(row)
    finally:
        torch.set_num_threads(previous_threads)
    return rows, []


def floor_verdict(row: dict[str, Any]) -> str:
    """'meets 3.0x', 'BELOW 3.0x', or '-' without a floor or a speedup."""
    floor = row.get("floor")
    if floor is None or row["status"] != "ok" or np.isnan(row["speedup"]):
        return "-"
    return f"{'meets' if row['speedup'] >= floor else 'BELOW'} {floor:g}x"


def e2e_table(rows: list[dict[str, Any]]) -> str:
    """One line per row: dense and sparse medians, speedup, the floor, and whether the
    sparsified model's output matched the dense one (status 'ok')."""
    lines = [
        (
            f"{'model':<44} {'sparsity':>8} {'format':<6} {'dense':>9} {'sparse':>9} "
            f"{'speedup':>8} {'floor':>11}  output"
        )
    ]
    for row in rows:
        dense = f"{row['dense_time_s'] * 1e3:7.2f}ms"
        sparse = f"{row['sparse_time_s'] * 1e3:7.2f}ms" if "sparse_time_s" in row else "-"
        speedup = "-" if np.isnan(row["speedup"]) else f"{row['speedup']:6.2f}x"
        status = "matched" if row["status"] == "ok" else row["status"]
        status += f": {row['detail']}" if row["detail"] else ""
        lines.append(
            f"{row['model']:<44} {row['sparsity']:8.2f} {row['format']:<6} {dense:>9} "
            f"{sparse:>9} {speedup:>8} {floor_verdict(row):>11}  {status}"
        )
    return "\n".join(lines)
