"""Recovery after pruning: distil the dense model into the pruned one, masks held fixed.

Needs only unlabeled inputs: the dense *teacher* and the pruned *student*
see the same batch; the loss is the mean squared error between their final
outputs, plus (``hidden_weight > 0``) the mean over blocks of the MSE between
their hidden states after each block (the blocks of
:func:`~sparsegemm.prune.find_blocks`).  After every optimizer step the
masks are re-applied (:func:`~sparsegemm.prune.apply_masks`), so pruned
weights stay exactly zero also under AdamW's weight decay.

Distributed: call it in every process of an initialised
``torch.distributed`` group (gloo on CPU) with each process's share of the
global batch; the student is wrapped in ``DistributedDataParallel``, whose
gradient averaging makes a step equal to the single-process step on the
whole global batch (the losses are means over equal shares).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Callable, Optional

import torch
from torch import nn

from .api import apply_masks
from .calibrated import _hidden_state, call_model, find_blocks

__all__ = ["distill", "model_output"]


def model_output(output: Any) -> torch.Tensor:
    """The tensor to match: the output itself, ``last_hidden_state``/``logits`` of a
    Hugging Face output, or the first element of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("last_hidden_state", "logits"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    return _hidden_state(output)


def _record_block_outputs(model: nn.Module, store: list[torch.Tensor]):
    handles = []
    for _, block in find_blocks(model):
        def hook(module, inputs, output):
            store.append(_hidden_state(output))

        handles.append(block.register_forward_hook(hook))
    return handles


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: Iterable,
    *,
    epochs: int = 1,
    max_steps: Optional[int] = None,
    minutes: Optional[float] = None,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    hidden_weight: float = 0.0,
    output_fn: Callable[[Any], torch.Tensor] = model_output,
    optimizer: Optional[torch.optim.Optimizer] = None,
    schedule: str = "constant",
    warmup: float = 0.05,
    frozen: tuple[type, ...] = (),
    cache_teacher: bool = False,
) -> list[float]:
    """Train ``student`` to reproduce ``teacher`` on unlabeled ``data``; returns the losses.

    Args:
        data: batches of model inputs (see :func:`~sparsegemm.prune.call_model`);
            iterated ``epochs`` times unless ``max_steps`` or ``minutes`` stop first.
        lr, weight_decay: of the AdamW optimizer made when ``optimizer`` is None.
        hidden_weight: weight of the per-block hidden-state MSE (0: final output only).
        output_fn: maps a model's output to the tensor compared.
        schedule: "constant", or "cosine": the learning rate rises linearly over
            the first ``warmup`` of the run, then decays to zero along a cosine.
            Progress is measured in steps against ``max_steps``, or in time
            against ``minutes`` (whichever stops the run first), else in epochs.
        frozen: module types whose parameters are not trained (e.g.
            ``(nn.Embedding,)``: a vocabulary table is most of a small model's
            parameters and gets almost no signal from a short run).
        cache_teacher: keep the teacher's output (and block states) for each batch
            from the first epoch and reuse them in later ones, which saves the
            teacher's forward pass (about a quarter of a step). ``data`` must then
            be a sequence that yields the same batches in the same order each
            epoch; memory holds one output and the block states per batch.

    Both models run in eval mode (no dropout: a step is a deterministic
    function of the batch).  The teacher is never modified.  In an
    initialised ``torch.distributed`` group of more than one process, the
    student is trained through ``DistributedDataParallel``; pass each process
    its share of every global batch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if hidden_weight < 0:
        raise ValueError(f"hidden_weight must be >= 0, got {hidden_weight}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if cache_teacher and not isinstance(data, Sequence):
        raise TypeError("cache_teacher needs data to be a sequence of batches (a list), "
                        f"which yields the same batches each epoch; got {type(data).__name__}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be in [0, 1), got {warmup}")
    # frozen parameters skip their gradients too (restored in the finally below)
    frozen_params = [p for m in student.modules() if isinstance(m, frozen)
                     for p in m.parameters(recurse=False) if p.requires_grad]
    for p in frozen_params:
        p.requires_grad_(False)
    trainable = [p for p in student.parameters() if p.requires_grad]
    if not trainable:
        for p in frozen_params:
            p.requires_grad_(True)
        raise ValueError("the student has no trainable parameters")
    if optimizer is None:
        optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    distributed = (torch.distributed.is_available() and torch.distributed.is_initialized()
                   and torch.distributed.get_world_size() > 1)
    runner: nn.Module = student
    if distributed:
        runner = nn.parallel.DistributedDataParallel(student)
    student_states: list[torch.Tensor] = []
    teacher_states: list[torch.Tensor] = []
    handles = []
    if hidden_weight > 0:
        handles = (_record_block_outputs(student, student_states)
                   + _record_block_outputs(teacher, teacher_states))
    was_training = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    losses: list[float] = []
    teacher_cache: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}
    started = time.monotonic()
    deadline = None if minutes is None else started + 60.0 * minutes
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    batches_per_epoch = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]

    def progress(epoch: int) -> float:
        done = []
        if max_steps is not None:
            done.append(len(losses) / max_steps)
        if deadline is not None:
            done.append((time.monotonic() - started) / (deadline - started))
        if not done and batches_per_epoch:
            done.append(len(losses) / (epochs * batches_per_epoch))
        return min(1.0, max(done, default=epoch / epochs))

    try:
        for epoch in range(epochs):
            for index, batch in enumerate(data):
                if (max_steps is not None and len(losses) >= max_steps) or (
                        deadline is not None and time.monotonic() >= deadline):
                    return losses
                if schedule == "cosine":
                    factor = _cosine_factor(progress(epoch), warmup)
                    for group, base in zip(optimizer.param_groups, base_lrs):
                        group["lr"] = base * factor
                student_states.clear()
                if index in teacher_cache:
                    target, teacher_block_states = teacher_cache[index]
                else:
                    teacher_states.clear()
                    with torch.no_grad():
                        target = output_fn(call_model(teacher, batch))
                    teacher_block_states = list(teacher_states)
                    if cache_teacher:
                        teacher_cache[index] = (target, teacher_block_states)
                loss = nn.functional.mse_loss(output_fn(call_model(runner, batch)), target)
                if hidden_weight > 0:
                    pairs = list(zip(student_states, teacher_block_states))
                    loss = loss + hidden_weight * sum(
                        nn.functional.mse_loss(s, t.detach()) for s, t in pairs) / len(pairs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                apply_masks(student)
                losses.append(loss.item())
    finally:
        for handle in handles:
            handle.remove()
        student.train(was_training[0])
        teacher.train(was_training[1])
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base
        for p in frozen_params:
            p.requires_grad_(True)
    return losses


def _cosine_factor(progress: float, warmup: float) -> float:
    """Learning-rate factor: linear warm-up to 1, then a cosine decay to 0."""
    if progress < warmup:
        return (progress + 1e-3) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (progress - warmup) / (1.0 - warmup)))
