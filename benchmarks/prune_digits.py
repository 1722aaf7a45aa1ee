"""Accuracy of pruned models on sklearn's digits data set (8x8 images, 10 classes).

Trains a small MLP and a small CNN dense, then for each configuration starts
from the dense weights, prunes gradually with the cubic AGP schedule while
fine-tuning (masks held fixed between pruning steps) and fine-tunes at the
final sparsity:

* 90 % unstructured (global L1 magnitude)
* 80 % 4x1 blocks (4 output rows x 1 input column, global block L1 norm)
* 50 % channels (per-layer L2 norm of output neurons / filters), then
  physically thinned with ``prune.thin`` into smaller dense layers
* 95 % unstructured

As is the library default, the first and the last layer stay dense; the
"sparsity" column is over the pruned layers, "total" over all Linear/Conv
weights.

Run::

    PYTHONPATH=python python benchmarks/prune_digits.py            # full
    PYTHONPATH=python python benchmarks/prune_digits.py --quick    # fewer epochs

Needs scikit-learn (``load_digits`` ships with it; no download).

Speed: each pruned model (after ``prune.remove``) is converted with
``sparsegemm.torch.sparsify(format="auto")``, which asks the planner, layer by
layer at the batch each layer sees, whether a sparse format beats dense; then
dense and sparsified inference at batch 256 on 2 threads are timed (medians of
interleaved blocks), see :func:`speed_hook`. These layers are small, so the
planner may keep them dense: the "sparse layers" column and the per-layer
reports (printed as the run goes) say so, and no speedup is claimed then.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from sparsegemm import prune
from sparsegemm.torch import sparsify
from torch import nn

# Accuracy floors: allowed drop in points (percent) vs the dense model.
FLOORS = {"unstructured-90": 1.0, "block4x1-80": 1.5, "unstructured-95": 2.5}


SPEED_BATCH = 256
SPEED_THREADS = 2


@dataclass
class Speed:
    """Dense vs sparsified inference of one pruned model."""

    dense_ms: float
    sparse_ms: float
    converted: int  # layers sparsify made sparse
    candidates: int  # Linear/Conv2d layers it looked at
    report: str  # sparsify's per-layer report

    @property
    def speedup(self) -> Optional[float]:
        """dense / sparse time, or None when no layer became sparse (nothing to claim)."""
        return self.dense_ms / self.sparse_ms if self.converted else None


def _product_rows(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """For each Linear/Conv2d: the rows of the dense operand its product sees on ``x``
    (batch rows for a Linear, batch x output pixels for a Conv2d)."""
    rows: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            def record(module, inputs, output, name=name):
                per_row = output.shape[1] if isinstance(module, nn.Conv2d) else output.shape[-1]
                rows[name] = output.numel() // per_row
            hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return rows


def _block_ms(run: Callable[[], object], calls: int) -> float:
    """Mean milliseconds per call over one block of ``calls`` calls, after a warm-up call."""
    run()
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls * 1e3


def speed_hook(model: nn.Module, x: torch.Tensor, *, threads: int = SPEED_THREADS,
               repeats: int = 15, calls: int = 5) -> tuple[nn.Module, Speed]:
    """Sparsify a copy of the pruned ``model`` (after ``prune.remove``) and time both.

    ``sparsify(format="auto")`` runs per layer with the batch that layer sees on
    ``x`` as ``batch_hint``, so the planner decides each Linear at its real size
    (convolutions are timed as themselves on their input from ``x``); layers
    with no measured gain stay dense. Dense and sparse inference on
    ``x`` are then timed on ``threads`` threads: ``repeats`` interleaved blocks
    of ``calls`` calls each, medians compared. Returns the sparsified model and
    the :class:`Speed`.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = model.eval()
        sparse = copy.deepcopy(model)
        # The example pass records the rows each layer sees, and each is planned at those.
        sparsify(sparse, example_inputs=x)
        sparse.eval()
        dense_ms, sparse_ms = [], []
        with torch.inference_mode():
            for _ in range(repeats):
                dense_ms.append(_block_ms(lambda: model(x), calls))
                sparse_ms.append(_block_ms(lambda: sparse(x), calls))
    finally:
        torch.set_num_threads(previous)
    report = sparse.sparsegemm_report
    return sparse, Speed(statistics.median(dense_ms), statistics.median(sparse_ms),
                         len(report.converted), len(report), str(report))


# ---------------------------------------------------------------- data
def load_data(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    idx = torch.arange(len(y)).numpy()
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed, stratify=d.target)
    mean, std = x[tr].mean(0), x[tr].std(0) + 0.1
    x = (x - mean) / std
    return x[tr], y[tr], x[te], y[te]


# ---------------------------------------------------------------- models
def make_mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def make_wide_mlp() -> nn.Sequential:
    """Wide hidden layers, so the pruned (middle) layers are big enough for sparse
    kernels to beat dense BLAS; the small models above are dominated by overheads."""
    return nn.Sequential(
        nn.Linear(64, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.ReLU(),
        nn.Linear(2048, 10),
    )


class Unflatten8(nn.Module):
    def forward(self, x):
        return x.reshape(-1, 1, 8, 8)


def make_cnn() -> nn.Sequential:
    # conv2 -> BN -> ReLU -> MaxPool -> Flatten -> Linear and Linear -> ReLU -> Linear
    # are chains prune.thin can shrink exactly.
    return nn.Sequential(
        Unflatten8(),
        nn.Conv2d(1, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


# ---------------------------------------------------------------- training
@dataclass
class Trainer:
    xtr: torch.Tensor
    ytr: torch.Tensor
    batch: int = 64
    seed: int = 0

    def __post_init__(self):
        self.gen = torch.Generator().manual_seed(self.seed)
        self.perm = None
        self.pos = 0

    def next_batch(self):
        n = len(self.ytr)
        if self.perm is None or self.pos + self.batch > n:
            self.perm = torch.randperm(n, generator=self.gen)
            self.pos = 0
        i = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return self.xtr[i], self.ytr[i]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.ytr) // self.batch

    def step_fn(self, model, opt, sched=None) -> Callable[[int], float]:
        loss_fn = nn.CrossEntropyLoss()

        def step(t: int) -> float:
            model.train()
            x, y = self.next_batch()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            return loss.item()

        return step


@torch.no_grad()
def accuracy(model: nn.Module, x, y) -> float:
    model.eval()
    return 100.0 * (model(x).argmax(1) == y).float().mean().item()


def train_dense(make, data, epochs: int, seed: int = 0, lr: float = 2e-3) -> nn.Module:
    torch.manual_seed(seed)
    model = make()
    tr = Trainer(data[0], data[1], seed=seed)
    steps = epochs * tr.steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    step = tr.step_fn(model, opt, sched)
    for t in range(steps):
        step(t)
    return model


CONFIGS: dict[str, dict] = {
    "unstructured-90": dict(amount=0.90, criterion="l1", scope="global"),
    "block4x1-80": dict(amount=0.80, criterion=prune.BlockNorm((4, 1)), scope="global"),
    "channels-50": dict(amount=0.50, criterion=prune.ChannelNorm(2), scope="layer", thin=True),
    "unstructured-95": dict(amount=0.95, criterion="l1", scope="global"),
}


def prune_finetune(
    dense: nn.Module,
    data,
    cfg: dict,
    *,
    prune_epochs: int,
    finetune_epochs: int,
    n_prune_steps: int = 10,
    seed: int = 0,
    lr: float = 1e-3,
    skip_first_last: bool = True,
) -> nn.Module:
    """AGP-prune a copy of ``dense`` over ``prune_epochs`` while training, then fine-tune."""
    torch.manual_seed(seed)
    model = prune.clone_model(dense)
    tr = Trainer(data[0], data[1], seed=seed + 1)
    spe = tr.steps_per_epoch
    steps_between = max(1, (prune_epochs * spe) // n_prune_steps)
    ft_steps = finetune_epochs * spe
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # constant LR while pruning, cosine decay during the final fine-tuning
    prune_steps = n_prune_steps * steps_between

    def lam(t: int) -> float:
        if t < prune_steps:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (t - prune_steps) / max(1, ft_steps)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    prune.gradual_prune(
        model,
        tr.step_fn(model, opt, sched),
        cfg["amount"],
        n_prune_steps=n_prune_steps,
        steps_between=steps_between,
        finetune_steps=ft_steps,
        criterion=cfg["criterion"],
        scope=cfg["scope"],
        skip_first_last=skip_first_last,
    )
    model.eval()
    if cfg.get("thin"):
        thinned = prune.thin(model)
        with torch.no_grad():
            diff = (thinned(data[2]) - model(data[2])).abs().max().item()
        if diff > 1e-3:
            raise AssertionError(f"thinned model differs from the masked one by {diff}")
        return thinned
    return prune.remove(model)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run(
    models=("mlp", "cnn"),
    configs=tuple(CONFIGS),
    *,
    quick: bool = False,
    seed: int = 0,
    verbose: bool = True,
    prune_first_last: bool = False,
) -> list[dict]:
    """Train dense, then prune+fine-tune each config; one row per (model, config).

    ``prune_first_last=True`` also prunes the first and last layer for the
    unstructured and block configs (channel pruning always leaves the first
    and last layer alone: the last layer's outputs are the class logits).
    """
    data = load_data(seed)
    makers = {"mlp": make_mlp, "cnn": make_cnn, "wide": make_wide_mlp}
    ep = dict(dense=30, prune=10, finetune=10) if quick else dict(dense=60, prune=20, finetune=20)
    rows = []
    for mname in models:
        t0 = time.perf_counter()
        dense = train_dense(makers[mname], data, ep["dense"], seed=seed)
        dacc = accuracy(dense, data[2], data[3])
        rows.append(
            dict(
                model=mname,
                config="dense",
                sparsity=0.0,
                total=0.0,
                params=n_params(dense),
                acc=dacc,
                drop=0.0,
                floor=None,
                speed=None,
                seconds=time.perf_counter() - t0,
            )
        )
        if verbose:
            print(f"[{mname}] dense acc {dacc:.2f}%  ({rows[-1]['seconds']:.1f}s)", flush=True)
        for cname in configs:
            t0 = time.perf_counter()
            cfg = CONFIGS[cname]
            skip = not (prune_first_last and not cfg.get("thin"))
            pruned_names = list(prune.prunable_layers(dense, skip_first_last=skip))
            pm = prune_finetune(
                dense,
                data,
                cfg,
                prune_epochs=ep["prune"],
                finetune_epochs=ep["finetune"],
                seed=seed,
                skip_first_last=skip,
            )
            sparse_model, speed = speed_hook(pm, speed_input(data[2]))
            acc = accuracy(sparse_model, data[2], data[3])  # the sparsified model's accuracy
            layers = prune.prunable_layers(pm, skip_first_last=False)
            sp = prune.sparsity(pm, layers=layers)
            z = sum(sp[n] * layers[n].weight.numel() for n in pruned_names)
            nw = sum(layers[n].weight.numel() for n in pruned_names)
            rows.append(
                dict(
                    model=mname,
                    config=cname,
                    sparsity=z / nw if not cfg.get("thin") else cfg["amount"],
                    total=sp["total"],
                    params=n_params(pm),
                    acc=acc,
                    drop=dacc - acc,
                    floor=FLOORS.get(cname),
                    speed=speed,
                    seconds=time.perf_counter() - t0,
                )
            )
            if verbose:
                r = rows[-1]
                print(
                    f"[{mname}] {cname}: acc {acc:.2f}% (drop {r['drop']:+.2f})  "
                    f"({r['seconds']:.1f}s)\n{speed.report}",
                    flush=True,
                )
    return rows


def speed_input(x_test: torch.Tensor) -> torch.Tensor:
    """SPEED_BATCH rows of test inputs (repeated if the test set is smaller)."""
    reps = -(-SPEED_BATCH // len(x_test))
    return x_test.repeat(reps, 1)[:SPEED_BATCH].contiguous()


def _speed_columns(speed: Optional[Speed]) -> str:
    if speed is None:
        return f"{'':>8} {'':>9} {'':>8} {'':>6}"
    layers = f"{speed.converted}/{speed.candidates}"
    speedup = "none" if speed.speedup is None else f"{speed.speedup:.2f}x"
    return f"{speed.dense_ms:>8.3f} {speed.sparse_ms:>9.3f} {speedup:>8} {layers:>6}"


def format_rows(rows: list[dict]) -> str:
    head = (
        f"{'model':<5} {'config':<16} {'sparsity':>8} {'total':>6} {'params':>8} "
        f"{'acc %':>6} {'drop':>6} {'floor':>6} {'ok':>3} "
        f"{'dense ms':>8} {'sparse ms':>9} {'speedup':>8} {'sparse':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        fl = r["floor"]
        ok = "" if fl is None else ("yes" if r["drop"] <= fl else "NO")
        lines.append(
            f"{r['model']:<5} {r['config']:<16} {r['sparsity']:>8.1%} {r['total']:>6.1%} "
            f"{r['params']:>8d} {r['acc']:>6.2f} {r['drop']:>+6.2f} "
            f"{'' if fl is None else f'{fl:.1f}':>6} {ok:>3} {_speed_columns(r.get('speed'))}"
        )
    lines.append(
        "sparsity: of the pruned layers (all but first and last unless --prune-first-last); "
        "for channels-50, the fraction of "
        "neurons/filters pruned (then removed by thinning, so the weights left are dense)."
    )
    lines.append(
        "total: zeros over all Linear/Conv weights.  acc: of the sparsified model.  "
        f"Speed: inference at batch {SPEED_BATCH}, {SPEED_THREADS} threads, medians of "
        "interleaved blocks, dense pruned model vs sparsify(format='auto'); 'sparse' = layers "
        "converted / layers considered; speedup 'none' = the planner kept every layer dense "
        "(no gain measured at these sizes), so there is no sparse speedup to report."
    )
    lines.append(
        "Pruned models start from the dense weights and train further (AGP phase + fine-tuning), "
        "so they can beat the dense model on this small, easy data set."
    )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs")
    ap.add_argument("--models", default="mlp,cnn,wide",
                    help="comma-separated: mlp, cnn, wide (a 64-2048-2048-2048-10 MLP)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prune-first-last",
        action="store_true",
        help="also prune the first and last layer (unstructured and block configs)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave default)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = run(
        tuple(a.models.split(",")), quick=a.quick, seed=a.seed, prune_first_last=a.prune_first_last
    )
    print()
    print(format_rows(rows))
    bad = [r for r in rows if r["floor"] is not None and r["drop"] > r["floor"]]
    return 1 if bad else 0


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    raise SystemExit(main())
