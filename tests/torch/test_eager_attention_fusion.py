"""Attention written out eagerly (``softmax(q @ k.transpose(-1, -2) * scale) @ v``) in a
module with sparse children: sparsify runs it on the attention kernel at inference."""

from __future__ import annotations

import copy
import io
import math

import pytest

import torch
from sparsegemm.torch import attention as attention_module
from sparsegemm.torch import sparsify
from sparsegemm.torch.traced_forward import TracedForward
from torch import nn

TOL = {"rtol": 1e-5, "atol": 1e-5}


class Block(nn.Module):
    """Self-attention written out, in the variants models use: scale by * or /, before
    or after the product's operands, an additive mask, dropout on the probabilities."""

    def __init__(self, variant: str = "mul", width: int = 32, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.variant, self.heads = variant, heads
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        head = x.shape[2] // self.heads

        def split(t):
            return t.view(x.shape[0], x.shape[1], self.heads, head).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if self.variant == "mul":
            scores = q @ k.transpose(-1, -2) * head ** -0.5
        elif self.variant == "scale first":
            scores = head ** -0.5 * torch.matmul(q, k.transpose(-2, -1))
        elif self.variant == "div":
            scores = q @ k.transpose(-1, -2) / math.sqrt(64)
        else:  # "unscaled"
            scores = q @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores + mask
        probabilities = self.dropout(torch.softmax(scores, dim=-1))
        context = (probabilities @ v).transpose(1, 2).reshape(x.shape)
        return self.out(context)


def pruned(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(torch.rand_like(module.weight) > 0.8)
    return model.eval()


@pytest.fixture
def kernel_calls(count_calls):
    return count_calls(attention_module._core, "attention")


def eager_notes(model: nn.Module) -> list[str]:
    return [n for n in model.sparsegemm_report.notes if n.startswith("eager attention")]


@pytest.mark.parametrize("variant", ["mul", "scale first", "div", "unscaled"])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_forward_matches_and_runs_the_kernel(kernel_calls, variant, masked):
    torch.manual_seed(0)
    dense = pruned(Block(variant))
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)
    assert isinstance(vars(model).get("forward"), TracedForward)
    assert eager_notes(model) == [
        "eager attention (softmax(q @ k^T) @ v written out) on the attention kernel at "
        "inference (1): Block"]
    x = torch.randn(2, 9, 32)
    mask = torch.randn(2, 1, 1, 9) if masked else None  # additive, broadcast over heads and rows
    with torch.inference_mode():
        torch.testing.assert_close(model(x, mask), dense(x, mask), **TOL)
    assert len(kernel_calls) == 1


def test_dropout_is_fused_in_eval_and_kept_in_training(kernel_calls):
    torch.manual_seed(0)
    dense = pruned(Block(dropout=0.5))
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)
    x = torch.randn(1, 5, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, None), dense(x, None), **TOL)
    assert len(kernel_calls) == 1
    model.train()
    dense.train()
    torch.manual_seed(1)
    trained = model(x, None)
    torch.manual_seed(1)
    torch.testing.assert_close(trained, dense(x, None), **TOL)  # the class forward, dropout on
    trained.sum().backward()
    assert model.query.values.grad is not None
    assert len(kernel_calls) == 1


@pytest.mark.parametrize("case", ["float64", "bool mask", "grad"])
def test_the_eager_path_runs_where_the_kernel_does_not(kernel_calls, case):
    torch.manual_seed(0)
    dense = pruned(Block())
    if case == "float64":
        dense = dense.double()
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)
    x = torch.randn(2, 6, 32, dtype=torch.float64 if case == "float64" else torch.float32)
    mask = torch.rand(2, 1, 6, 6) > 0.5 if case == "bool mask" else None
    if case == "grad":
        x.requires_grad_(True)
        result = model(x, mask)
        result.sum().backward()
        assert x.grad is not None
    else:
        with torch.inference_mode():
            result = model(x, mask)
    with torch.no_grad():
        torch.testing.assert_close(result.detach(), dense(x, mask), **TOL)
    assert kernel_calls == []


class NotAttention(nn.Module):
    """Look-alikes sparsify must leave alone: softmax over another dimension, and scores
    that are used again."""

    def __init__(self, case: str):
        super().__init__()
        self.case = case
        self.query, self.key = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x):
        q, k = self.query(x).unsqueeze(1), self.key(x).unsqueeze(1)
        scores = q @ k.transpose(-1, -2)
        if self.case == "other dim":
            return torch.softmax(scores, dim=1) @ q
        return torch.softmax(scores, dim=-1) @ q + scores.mean()


@pytest.mark.parametrize("case", ["other dim", "scores reused"])
def test_look_alikes_are_left_alone(case):
    model = sparsify(pruned(NotAttention(case)), format="csr", min_sparsity=0.0)
    assert "forward" not in vars(model) and eager_notes(model) == []


def test_kernel_attention_false_keeps_the_written_attention(kernel_calls):
    torch.manual_seed(0)
    dense = pruned(Block())
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0, kernel_attention=False)
    assert "forward" not in vars(model) and eager_notes(model) == []
    x = torch.randn(1, 4, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, None), dense(x, None), **TOL)
    assert kernel_calls == []


def test_copies_and_saved_models_keep_the_fused_attention(kernel_calls):
    torch.manual_seed(0)
    dense = pruned(Block())
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)
    clone = copy.deepcopy(model)
    assert vars(clone)["forward"].module is clone
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 7, 32)
    with torch.inference_mode():
        expected = dense(x, None)
        for copied in (clone, loaded):
            torch.testing.assert_close(copied(x, None), expected, **TOL)
    assert len(kernel_calls) == 2


def test_each_pattern_of_none_arguments_gets_its_own_trace(kernel_calls):
    # A trace takes `mask is not None` as it went; a call with the other pattern is
    # traced anew rather than run through the first trace.
    torch.manual_seed(0)
    dense = pruned(Block())
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)
    x, mask = torch.randn(2, 5, 32), torch.randn(2, 1, 1, 5)
    with torch.inference_mode():
        for given in (None, mask, None, mask):
            torch.testing.assert_close(model(x, given), dense(x, given), **TOL)
            torch.testing.assert_close(model(x, mask=given), dense(x, given), **TOL)
    assert set(vars(model)["forward"].graphs) == {(False, True), (False, False)}
    # Unmasked, after the first forward (which finds that query, key and value share x),
    # the whole self-attention runs as one call (test_self_attention_chain_* below).
    assert len(kernel_calls) == 5


def chain_notes(model: nn.Module) -> list[str]:
    return [n for n in model.sparsegemm_report.notes if n.startswith("self-attention")]


def csr_block() -> tuple[nn.Module, nn.Module]:
    """A pruned Block and its sparsify(format='csr') copy."""
    torch.manual_seed(0)
    dense = pruned(Block())
    return dense, sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)


def run_twice(model: nn.Module, *inputs):
    """The second forward's output: the first one finds out that q, k and v share x."""
    with torch.inference_mode():
        model(*inputs)
        return model(*inputs)


@pytest.mark.parametrize("variant", ["mul", "scale first", "div", "unscaled"])
@pytest.mark.parametrize("shape", [(2, 9), (1, 1), (3, 17)])
def test_self_attention_chain_runs_in_one_kernel_call(isa, fused_calls, variant, shape):
    torch.manual_seed(0)
    dense = pruned(Block(variant))
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)
    assert chain_notes(model) == [
        "self-attention with its q, k, v and output Linears in one kernel call at "
        "inference where they run CSR (1): Block"]
    x = torch.randn(*shape, 32)
    got = run_twice(model, x, None)
    with torch.no_grad():
        torch.testing.assert_close(got, dense(x, None), **TOL)
    assert fused_calls == {"fused": 1, "attention": 1}  # the first forward ran step by step


def test_self_attention_chain_with_the_layers_sparsify_plans_by_default(fused_calls):
    torch.manual_seed(0)
    dense = Block(width=64, heads=4).eval()
    with torch.no_grad():
        for module in dense.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(torch.rand_like(module.weight) > 0.95)
    model = sparsify(copy.deepcopy(dense))  # auto layers, deciding on the live input
    x = torch.randn(2, 96, 64)
    got = run_twice(model, x, None)
    with torch.no_grad():
        torch.testing.assert_close(got, dense(x, None), **TOL)
    chain = next(m for m in vars(model)["forward"].graphs[(False, True)].modules()
                 if isinstance(m, attention_module.SelfAttentionChain))
    # One call where all four layers chose CSR, else the steps: either way, one attention.
    assert chain.one_calls == fused_calls["fused"]
    assert fused_calls["fused"] + fused_calls["attention"] == 2


@pytest.mark.parametrize("case", ["masked", "float64", "grad", "bsr", "bitmap", "dense out"])
def test_self_attention_chain_runs_step_by_step_where_one_call_does_not_apply(fused_calls,
                                                                                case):
    torch.manual_seed(0)
    dense = pruned(Block())
    if case == "float64":
        dense = dense.double()
    fmt = case if case in ("bsr", "bitmap") else "csr"
    options = {"blocksize": (4, 1)} if fmt == "bsr" else {}
    if case == "dense out":
        options["filter_fn"] = lambda module, name: name != "out"
    model = sparsify(copy.deepcopy(dense), format=fmt, min_sparsity=0.0, **options)
    x = torch.randn(2, 6, 32, dtype=torch.float64 if case == "float64" else torch.float32)
    mask = torch.randn(2, 1, 1, 6) if case == "masked" else None
    if case == "grad":
        model(x, mask)
        got = model(x, mask)
        got.sum().backward()
        assert model.query.values.grad is not None
        got = got.detach()
    else:
        got = run_twice(model, x, mask)
    with torch.no_grad():
        torch.testing.assert_close(got, dense(x, mask), **TOL)
    assert fused_calls["fused"] == 0


def test_self_attention_chain_reads_changed_weights(fused_calls):
    dense, model = csr_block()
    x = torch.randn(2, 6, 32)
    run_twice(model, x, None)
    with torch.no_grad():
        model.key.values.mul_(2.0)  # in place: the stacked copy must be rebuilt
        dense.key.weight.mul_(2.0)
        model.out.values.mul_(-1.0)  # read by the call directly
        dense.out.weight.mul_(-1.0)
        expected = dense(x, None)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, None), expected, **TOL)
    assert fused_calls["fused"] == 2


class NotSelfAttention(Block):
    """Keys and values from another input, or a context used again: eager attention, but
    not a self-attention chain."""

    def __init__(self, case: str):
        super().__init__()
        self.case = case

    def forward(self, x, memory):
        head = x.shape[2] // self.heads

        def split(t):
            return t.view(t.shape[0], t.shape[1], self.heads, head).transpose(1, 2)

        source = memory if self.case == "cross" else x
        q, k, v = split(self.query(x)), split(self.key(source)), split(self.value(source))
        context = torch.softmax(q @ k.transpose(-1, -2) * head ** -0.5, dim=-1) @ v
        merged = context.transpose(1, 2).reshape(x.shape)
        if self.case == "context used twice":
            return self.out(merged) + context.mean()
        return self.out(merged)


@pytest.mark.parametrize("case", ["cross", "context used twice"])
def test_attention_that_is_not_a_self_attention_chain_keeps_its_steps(fused_calls, case):
    torch.manual_seed(0)
    dense = pruned(NotSelfAttention(case))
    model = sparsify(copy.deepcopy(dense), format="csr", min_sparsity=0.0)
    assert eager_notes(model) and chain_notes(model) == []
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 5, 32)
    got = run_twice(model, x, memory)
    with torch.no_grad():
        torch.testing.assert_close(got, dense(x, memory), **TOL)
    assert fused_calls == {"fused": 0, "attention": 2}


def test_self_attention_chain_survives_copies_and_saving(fused_calls):
    dense, model = csr_block()
    x = torch.randn(2, 7, 32)
    run_twice(model, x, None)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.no_grad():
        expected = dense(x, None)
    for copied in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        torch.testing.assert_close(run_twice(copied, x, None), expected, **TOL)
    assert fused_calls["fused"] == 5  # copies keep the stacked group: both their forwards
