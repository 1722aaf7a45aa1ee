"""Residual add + LayerNorm in one kernel call: add_layer_norm against torch, and the
forwards sparsify rewrites to use it."""

from __future__ import annotations

import copy
import io

import pytest

import torch
from sparsegemm.torch import add_layer_norm, sparsify
from sparsegemm.torch import layer_norm as layer_norm_module
from sparsegemm.torch.layer_norm import layer_norm_kernel_applies
from sparsegemm.torch.sparsify import prepare_loaded
from sparsegemm.torch.traced_forward import TracedForward
from torch import nn

TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture
def kernel_calls(count_calls):
    """The kernel calls made while the test runs (the kernel still runs)."""
    return count_calls(layer_norm_module._core, "layer_norm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_torch_on_every_isa(isa, kernel_calls, dtype, affine):
    norm = nn.LayerNorm(40, elementwise_affine=affine, eps=1e-6).to(dtype)
    if affine:
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
    x, residual = torch.randn(2, 7, 40, dtype=dtype), torch.randn(2, 7, 40, dtype=dtype)
    with torch.inference_mode():
        result = add_layer_norm(x, residual, norm)
        expected = norm(x + residual)
    tolerance = TOL if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(result, expected, **tolerance)
    assert kernel_calls == [(14, 40)]


def test_strided_inputs_and_updated_parameters(kernel_calls):
    norm = nn.LayerNorm(16)
    base = torch.randn(6, 32)
    x, residual = base[:, ::2], torch.randn(16, 6).t()  # neither has contiguous rows
    with torch.no_grad():
        torch.testing.assert_close(add_layer_norm(x, residual, norm), norm(x + residual), **TOL)
        norm.load_state_dict({"weight": torch.randn(16), "bias": torch.randn(16)})  # in place
        torch.testing.assert_close(add_layer_norm(x, residual, norm), norm(x + residual), **TOL)
        norm.weight = nn.Parameter(torch.randn(16))  # replaced: viewed anew
        torch.testing.assert_close(add_layer_norm(x, residual, norm), norm(x + residual), **TOL)
    assert len(kernel_calls) == 3


@pytest.mark.parametrize("case", ["grad", "bfloat16", "broadcast", "2-d norm", "subclass",
                                  "empty", "norm dtype"])
def test_torch_runs_what_the_kernel_does_not(kernel_calls, case):
    norm = nn.LayerNorm(8)
    x, residual = torch.randn(3, 8), torch.randn(3, 8)
    if case == "grad":
        x.requires_grad_()
    elif case == "bfloat16":
        x, residual, norm = x.bfloat16(), residual.bfloat16(), norm.bfloat16()
    elif case == "broadcast":
        residual = torch.randn(8)
    elif case == "2-d norm":
        norm, x, residual = nn.LayerNorm((3, 8)), x, residual
    elif case == "subclass":
        norm = type("MyNorm", (nn.LayerNorm,), {})(8)
    elif case == "empty":
        x, residual = torch.randn(0, 8), torch.randn(0, 8)
    elif case == "norm dtype":
        norm = norm.double()
    assert not layer_norm_kernel_applies(x, residual, norm)
    if case == "norm dtype":  # torch refuses it, and so does the fallback
        with pytest.raises(RuntimeError, match="mixed dtype"):
            add_layer_norm(x, residual, norm)
        return
    result = add_layer_norm(x, residual, norm)
    torch.testing.assert_close(result, norm(x + residual))
    assert kernel_calls == []
    if case == "grad":
        result.sum().backward()
        assert x.grad is not None


class OutputBlock(nn.Module):
    """Hugging Face's BertSelfOutput: dense, dropout, LayerNorm(hidden + input)."""

    def __init__(self, width: int = 48, inner: int = 96):
        super().__init__()
        self.dense = nn.Linear(inner, width)
        self.LayerNorm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(0.5)

    def forward(self, hidden_states, input_tensor):
        hidden_states = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(hidden_states + input_tensor)


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = OutputBlock()
        self.head = nn.Linear(48, 4)

    def forward(self, x, residual):
        return self.head(self.block(x, residual))


def _pruned(module: nn.Module, sparsity: float = 0.8) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(torch.rand(layer.weight.shape, generator=generator) >= sparsity)
    return module


def _inputs():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 5, 96, generator=generator), torch.randn(3, 5, 48, generator=generator)


def test_sparsify_fuses_the_residual_norm(kernel_calls):
    model = _pruned(Stack()).eval()
    reference, unfused = copy.deepcopy(model), copy.deepcopy(model)
    sparsify(model, format="csr", min_sparsity=0.5)
    sparsify(unfused, format="csr", min_sparsity=0.5, fuse_layer_norm=False)
    assert isinstance(vars(model.block).get("forward"), TracedForward)
    assert "residual add + LayerNorm in one kernel call at inference (1): block.LayerNorm" \
        in model.sparsegemm_report.notes
    x, residual = _inputs()
    with torch.inference_mode():
        torch.testing.assert_close(model(x, residual), reference(x, residual), **TOL)
        # keywords and positions both reach the traced forward
        torch.testing.assert_close(model.block(x, input_tensor=residual),
                                   reference.block(x, residual), **TOL)
    assert kernel_calls == [(15, 48), (15, 48)]
    assert set(model.state_dict()) == set(unfused.state_dict())


def test_training_runs_the_class_forward_and_learns(kernel_calls):
    model = _pruned(Stack()).eval()
    sparsify(model, format="csr", min_sparsity=0.5)
    model.train()
    x, residual = _inputs()
    torch.manual_seed(0)
    first = model(x, residual)
    torch.manual_seed(1)
    assert not torch.equal(first, model(x, residual))  # dropout is live
    first.sum().backward()
    assert model.block.LayerNorm.weight.grad is not None
    assert kernel_calls == []


def test_fuse_layer_norm_false_and_models_without_the_pattern(kernel_calls):
    model = _pruned(Stack()).eval()
    sparsify(model, format="csr", min_sparsity=0.5, fuse_layer_norm=False)
    assert "forward" not in vars(model.block)

    class NormAfterSum(nn.Module):  # the sum is used twice: nothing to fuse
        def __init__(self):
            super().__init__()
            self.dense, self.norm = nn.Linear(8, 8), nn.LayerNorm(8)

        def forward(self, x):
            total = self.dense(x) + x
            return self.norm(total) + total

    class VarArgs(nn.Module):  # *args: the traced forward could not take them in order
        def __init__(self):
            super().__init__()
            self.dense, self.norm = nn.Linear(8, 8), nn.LayerNorm(8)

        def forward(self, *inputs):
            return self.norm(self.dense(inputs[0]) + inputs[0])

    class ReadsItsBuffer(nn.Module):  # .double() would replace the buffer the trace holds
        def __init__(self):
            super().__init__()
            self.dense, self.norm = nn.Linear(8, 8), nn.LayerNorm(8)
            self.register_buffer("shift", torch.zeros(8))

        def forward(self, x):
            return self.norm(self.dense(x) + x + self.shift)

    for module in (NormAfterSum(), VarArgs(), ReadsItsBuffer()):
        holder = nn.Sequential(_pruned(module).eval())
        sparsify(holder, format="csr", min_sparsity=0.5)
        assert "forward" not in vars(holder[0])


def test_copies_pickles_and_reloads(kernel_calls):
    model = _pruned(Stack()).eval()
    reference = copy.deepcopy(model)
    sparsify(model, format="csr", min_sparsity=0.5)
    x, residual = _inputs()
    with torch.inference_mode():
        expected = model(x, residual)
    clone = copy.deepcopy(model)
    assert vars(clone.block)["forward"].module is clone.block
    with torch.no_grad():  # the copy runs its own parameters, the original keeps its own
        clone.block.LayerNorm.bias.add_(1.0)
        reference.block.LayerNorm.bias.add_(1.0)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.inference_mode():
        torch.testing.assert_close(clone(x, residual), reference(x, residual), **TOL)
        torch.testing.assert_close(model(x, residual), expected)
        torch.testing.assert_close(loaded(x, residual), expected, **TOL)
    assert len(kernel_calls) == 4
    # prepare_loaded arranges a model again without wrapping the fused forward twice.
    fused = vars(model.block)["forward"]
    prepare_loaded(model)
    assert vars(model.block)["forward"] is fused


def test_compile_and_export_take_the_plain_path():
    model = _pruned(Stack()).eval()
    reference = copy.deepcopy(model)
    sparsify(model, format="csr", min_sparsity=0.5)
    x, residual = _inputs()
    with torch.no_grad():
        expected = reference(x, residual)
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, residual), expected, **TOL)
    exported = torch.export.export(model, (x, residual))
    torch.testing.assert_close(exported.module()(x, residual), expected, **TOL)


def test_benchmark_checks_and_times_every_shape(benchmark_script, capsys):
    benchmark_script("shared_input")  # the script imports it as a sibling module
    script = benchmark_script("layer_norm")
    script.main(["--threads", "1", "--rounds", "1", "--shape-calls", "1", "--no-models"])
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == ["MiniLM", "BERT-base", "BERT-base", "one"]
    assert all(row.endswith("x") for row in rows)
