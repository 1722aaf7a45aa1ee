"""A stack of Llama-style MLP blocks at batch 1: dense against CSR, BSR, the bitmap
and the planner's choice, with the weights streaming from memory on every call.

    PYTHONPATH=python python benchmarks/decoder_stack.py [--small] [--threads 2]
        [--sparsities 0.3,0.5,0.7,0.9] [--repeats 15] [--batch 1] [--no-auto] [--no-default]
        [--formats csr,bsr4x1,bitmap] [--int8]

Each block is ``h = h + down(silu(gate(h)) * up(h))`` with gate and up
``hidden -> intermediate`` and down ``intermediate -> hidden`` (default 4 blocks
of 4096 / 11008: about 2.2 GB of float32 weights, far beyond the last-level
cache, so every call streams them; ``--small`` uses 1024 / 2752, about 135 MB,
for a quick check). Weights are pruned unstructured (uniformly at random) to
each sparsity in turn.

Per sparsity, each format is built on its own (one sparse copy of the stack at
a time, to stay within memory), checked against the dense pruned stack, and
timed in interleaved rounds with both dense references (numpy's BLAS and
torch's ``F.linear``; the faster one is "dense"): each round times every
contender as a block of calls after one warm-up call, with a short sleep
between blocks; rounds are repeated when the dense rounds disagree by more than
1.35x (a slow phase of the VM). Reported: medians, each format's speedup over
the best dense *measured in the same rounds*, and the weight bytes each format
streamed per second (dense's next to it). "auto" is ``sparsegemm.torch.sparsify``
with ``format='auto'`` at ``batch_hint`` = the batch: the planner picks per layer.
"default" is ``sparsify(model)`` with no arguments, as a newcomer calls it: its
layers time their candidates on the first forward (the untimed warm-up call). Both
show what their products ran in ("bitmap:8": stacked gate and up projections count
as one product).

``--int8`` adds the int8 road: torch's ``quantize_dynamic`` of the dense stack
("int8-dyn", FBGEMM, no pruning needed), torchao's
``Int8DynamicActivationInt8WeightConfig`` where torchao is installed ("int8-ao",
its successor) and ``sparsify(model, weight_dtype="int8")`` ("int8-sparse": int8
bitmap weights), all checked to a relative error of 5% against the float stack;
the last column is int8-sparse's speedup over the faster of int8-dyn and int8-ao
in the same rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import sparsegemm

ROUND_DISAGREEMENT = 1.35
MAX_EXTRA_ROUNDS = 2
SPARSE_FORMATS = ("csr", "bsr4x1", "bitmap")


def running_modules(model: Any) -> list[Any]:
    """The modules a sparsified stack's forward runs its products with: plain and
    sparse Linears, and for a layer that decides at run time (after the first
    forward) the module it chose, or for stacked siblings their one stacked module."""
    import torch
    from sparsegemm.torch.auto import AutoSparseLinear

    found: dict[int, Any] = {}

    def visit(module: Any) -> None:
        group = getattr(module, "_shared_input", None)
        if group is not None and group.state == "stacked":
            module = group.fused
        if isinstance(module, AutoSparseLinear):
            for decision in module.decisions.values() or [None]:
                chosen = module._module(decision)  # what forward runs for that decision
                found[id(chosen)] = chosen
        elif isinstance(module, torch.nn.Linear) or hasattr(module, "format"):
            found[id(module)] = module
        else:
            for child in module.children():
                visit(child)

    visit(model)
    return list(found.values())


def module_bytes(modules: list[Any]) -> int:
    """Weight bytes the modules stream per call: a Linear's weight, a sparse layer's
    stored arrays."""
    return sum(sum(t.numel() * t.element_size()
                   for t in (*module.parameters(), *module.buffers())
                   if t.dim() > 1 or getattr(module, "format", None))
               for module in modules)


def layer_formats(modules: list[Any]) -> str:
    """How many products run in each format, e.g. "bitmap:8" ("dense" for a Linear)."""
    chosen = [getattr(m, "format", "dense") for m in modules]
    return ",".join(f"{f}:{chosen.count(f)}" for f in sorted(set(chosen)))


def silu(g: np.ndarray) -> np.ndarray:
    return g / (1.0 + np.exp(-g))


def make_weights(
    layers: int, hidden: int, intermediate: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """Per block: gate and up (intermediate x hidden), down (hidden x intermediate), float32."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(layers):
        block = {}
        for name, shape in (("gate", (intermediate, hidden)), ("up", (intermediate, hidden)),
                            ("down", (hidden, intermediate))):
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= 1.0 / np.sqrt(shape[1])
            w[w == 0] = 1e-3  # so the sparsity is exactly what pruning sets
            block[name] = w
        blocks.append(block)
    return blocks


def prune_to(blocks: list[dict[str, np.ndarray]], current: float, target: float,
             rng: np.random.Generator) -> None:
    """Zero entries at random, in place, taking each weight from ``current`` to ``target``."""
    if target <= current:
        return
    drop = 1.0 - (1.0 - target) / (1.0 - current)  # of the entries still kept
    for block in blocks:
        for w in block.values():
            for row in range(0, w.shape[0], 1024):  # in slices: bounded temporaries
                part = w[row:row + 1024]
                part[rng.random(part.shape, dtype=np.float32) < drop] = 0.0


def stack_forward(blocks: list[Any], x: np.ndarray, linear: Callable[[np.ndarray, Any], np.ndarray]
                  ) -> np.ndarray:
    h = x
    for block in blocks:
        h = h + linear(silu(linear(h, block["gate"])) * linear(h, block["up"]), block["down"])
    return h


def time_rounds(runners: dict[str, Callable[[], Any]], repeats: int, rounds: int,
                dense_names: tuple[str, ...]) -> dict[str, list[float]]:
    """Interleaved rounds; returns every sample (seconds) per runner."""
    samples: dict[str, list[list[float]]] = {name: [] for name in runners}

    def one_round() -> None:
        for name, run in runners.items():
            run()
            block = []
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                block.append(time.perf_counter() - start)
            samples[name].append(block)
            time.sleep(0.005)

    for _ in range(rounds):
        one_round()
    for _ in range(MAX_EXTRA_ROUNDS):
        medians = [float(np.median(b)) for name in dense_names for b in samples[name]]
        per_round = [min(float(np.median(samples[n][i])) for n in dense_names)
                     for i in range(len(samples[dense_names[0]]))]
        if not medians or max(per_round) <= ROUND_DISAGREEMENT * min(per_round):
            break
        one_round()
    return {name: [t for block in blocks for t in block] for name, blocks in samples.items()}


def torch_stack(blocks: list[dict[str, np.ndarray]]) -> Any:
    """The stack as an ``nn.Sequential`` of blocks of bias-free ``nn.Linear`` (sharing the
    numpy weights' memory)."""
    import torch.nn.functional as F

    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, b: dict[str, np.ndarray]):
            super().__init__()
            for k, w in b.items():
                layer = nn.Linear(w.shape[1], w.shape[0], bias=False)
                layer.weight = nn.Parameter(torch.from_numpy(w), requires_grad=False)
                setattr(self, k, layer)

        def forward(self, h: Any) -> Any:
            return h + self.down(F.silu(self.gate(h)) * self.up(h))

    return nn.Sequential(*(Block(b) for b in blocks)).eval()


def build_format(name: str, W: np.ndarray) -> Any:
    if name == "csr":
        return sparsegemm.CSRMatrix.from_dense(W)
    if name == "bitmap":
        return sparsegemm.BitmapMatrix.from_dense(W)
    if name.startswith("bsr"):
        r, c = (int(v) for v in name[3:].split("x"))
        return sparsegemm.BSRMatrix.from_dense(W, (r, c))
    raise ValueError(name)


def storage_bytes(operand: Any) -> int:
    return operand.nbytes if isinstance(operand, np.ndarray) else int(operand._storage_nbytes())


def thread_limits(threads: int) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    with contextlib.suppress(ImportError):
        import threadpoolctl

        stack.enter_context(threadpoolctl.threadpool_limits(limits=threads, user_api="blas"))
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help="hidden 1024, intermediate 2752 (about 135 MB): a quick check")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=None, help="override the hidden size")
    parser.add_argument("--intermediate", type=int, default=None,
                        help="override the intermediate size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sparsities", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per block")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--formats", default=",".join(SPARSE_FORMATS),
                        help=f"comma-separated, from {', '.join(SPARSE_FORMATS)}")
    parser.add_argument("--no-auto", action="store_true", help="skip sparsify(format='auto')")
    parser.add_argument("--no-default", action="store_true",
                        help="skip sparsify(model) with no arguments")
    parser.add_argument("--int8", action="store_true",
                        help="also time quantize_dynamic and sparsify(weight_dtype='int8')")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    hidden, intermediate = (1024, 2752) if args.small else (4096, 11008)
    hidden = args.hidden or hidden
    intermediate = args.intermediate or intermediate
    sparsities = sorted(float(s) for s in args.sparsities.split(","))
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    threads = args.threads
    sparsegemm.set_num_threads(threads)
    try:
        import torch.nn.functional as F

        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None

    sparsegemm.show_config()
    with contextlib.suppress(ImportError):
        import threadpoolctl

        for info in threadpoolctl.threadpool_info():
            print(f"  {info.get('user_api')}: {info.get('internal_api')} {info.get('version')} "
                  f"({info.get('num_threads')} threads before limits)")
    blocks = make_weights(args.layers, hidden, intermediate, args.seed)
    dense_bytes = sum(w.nbytes for b in blocks for w in b.values())
    print(f"{args.layers} MLP blocks {hidden} -> {intermediate} -> {hidden}, batch {args.batch}, "
          f"{threads} threads, {dense_bytes / 1e9:.2f} GB of float32 weights; "
          f"{args.rounds} rounds x {args.repeats} calls, medians")
    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.batch, hidden), dtype=np.float32)

    def numpy_linear(h: np.ndarray, w: Any) -> np.ndarray:
        return h @ w.T

    def sgemm_linear(h: np.ndarray, w: Any) -> np.ndarray:
        return sparsegemm.linear(h, w, num_threads=threads)

    header = (f"{'sparsity':>8} {'dense ms':>9} {'dense GB/s':>10} {'by':>6}  " +
              "  ".join(f"{f + ' x (GB/s)':>18}" for f in formats) +
              ("  auto x (layers)" if not args.no_auto else "") +
              ("  default x (layers)" if not args.no_default else "") +
              ("  int8-dyn x  int8-ao x  int8-sparse x  sparse/int8" if args.int8 else ""))
    print(header, flush=True)
    current = 0.0
    def one_sparsity(sparsity: float) -> str:
        dense_runners: dict[str, Callable[[], Any]] = {
            "numpy": lambda: stack_forward(blocks, x, numpy_linear)}
        if torch is not None:
            tblocks = [{k: torch.from_numpy(w) for k, w in b.items()} for b in blocks]
            xt = torch.from_numpy(x)

            def torch_forward() -> Any:
                h = xt
                for b in tblocks:
                    h = h + F.linear(F.silu(F.linear(h, b["gate"])) * F.linear(h, b["up"]),
                                     b["down"])
                return h

            dense_runners["torch"] = torch_forward
        with thread_limits(threads):
            expected = stack_forward(blocks, x, numpy_linear).astype(np.float64)
        scale = np.abs(expected).max() + 1.0
        results: dict[str, tuple[float, float, float]] = {}  # name -> (ratio, GB/s, dense GB/s)
        dense_best = (np.inf, "")
        notes: dict[str, str] = {}

        def measure(name: str, run: Callable[[], Any], nbytes: int,
                    relative_error: float | None = None) -> None:
            nonlocal dense_best
            got = run()
            got = got.detach().numpy() if hasattr(got, "detach") else np.asarray(got)
            if relative_error is not None:  # quantized: close, not equal
                error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
                if not error <= relative_error:
                    raise RuntimeError(f"{name} at {sparsity:.0%}: relative error {error:.3g}")
            elif not np.allclose(got, expected, rtol=1e-3, atol=1e-3 * scale):
                raise RuntimeError(f"{name} at {sparsity:.0%} disagrees with the dense stack")
            with thread_limits(threads):
                samples = time_rounds({**dense_runners, name: run}, args.repeats, args.rounds,
                                      tuple(dense_runners))
            dense_medians = {d: float(np.median(samples[d])) for d in dense_runners}
            fastest = min(dense_medians, key=dense_medians.get)
            dense_time = dense_medians[fastest]
            if dense_time < dense_best[0]:
                dense_best = (dense_time, fastest)
            t = float(np.median(samples[name]))
            results[name] = (dense_time / t, nbytes / t / 1e9, dense_bytes / dense_time / 1e9)

        for fmt in formats:
            sparse_blocks = [{k: build_format(fmt, w) for k, w in b.items()} for b in blocks]
            nbytes = sum(storage_bytes(w) for b in sparse_blocks for w in b.values())
            measure(fmt, lambda sb=sparse_blocks: stack_forward(sb, x, sgemm_linear), nbytes)
            del sparse_blocks
            gc.collect()
        if torch is not None:
            from sparsegemm.torch import sparsify

            # "auto": the planner told the batch; "default": sparsify(model) with no
            # arguments, as a newcomer calls it (its layers decide on their first forward,
            # the untimed warm-up call).
            runs = [] if args.no_auto else [
                ("auto", dict(format="auto", batch_hint=args.batch, min_sparsity=0.0))]
            runs += [] if args.no_default else [("default", {})]
            for name, options in runs:
                model = torch_stack(blocks)
                with torch.no_grad():
                    sparsify(model, **options)

                def forward(model: Any = model) -> Any:
                    with torch.no_grad():
                        return model(xt)

                forward()  # layers that decide at run time do so here
                running = running_modules(model)
                measure(name, forward, module_bytes(running))
                notes[name] = layer_formats(running)
                del running, model, forward
                gc.collect()
        if args.int8 and torch is not None:
            import warnings

            from sparsegemm.torch import sparsify

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is marked deprecated
                dynamic = torch.ao.quantization.quantize_dynamic(
                    torch_stack(blocks), {torch.nn.Linear}, dtype=torch.qint8)
            measure("int8-dyn", lambda: dynamic(xt), dense_bytes // 4, relative_error=0.05)
            del dynamic
            if importlib.util.find_spec("torchao") is not None:
                from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

                ao_model = torch_stack(blocks)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    quantize_(ao_model, Int8DynamicActivationInt8WeightConfig())

                def ao_forward() -> Any:
                    with torch.no_grad():
                        return ao_model(xt)

                measure("int8-ao", ao_forward, dense_bytes // 4, relative_error=0.05)
                del ao_model
            int8_model = sparsify(torch_stack(blocks), weight_dtype="int8", min_sparsity=0.0)
            nbytes = sum(t.numel() * t.element_size() for t in int8_model.buffers())

            def int8_forward() -> Any:
                with torch.no_grad():
                    return int8_model(xt)

            measure("int8-sparse", int8_forward, nbytes, relative_error=0.05)
            del int8_model
            gc.collect()
        cells = [f"{results[f][0]:>6.2f}x ({results[f][1]:>5.1f})".rjust(18) for f in formats]
        dense_time, by = dense_best
        line = (f"{sparsity:>8.0%} {dense_time * 1e3:>9.2f} "
                f"{dense_bytes / dense_time / 1e9:>10.1f} "
                f"{by:>6}  " + "  ".join(cells))
        for name in ("auto", "default"):
            if name in results:
                line += f"  {results[name][0]:.2f}x ({results[name][1]:.1f} GB/s; {notes[name]})"
        if "int8-sparse" in results:
            dyn, ours = results["int8-dyn"][0], results["int8-sparse"][0]
            ao = results.get("int8-ao", (0.0,))[0]
            # Three significant digits: eager torchao on a tiny stack can be
            # hundreds of times slower than dense, which two decimals print as 0.00.
            ao_text = f"{ao:>7.3g}x" if "int8-ao" in results else f"{'-':>8}"
            line += f"  {dyn:>9.3g}x  {ao_text}  {ours:>12.3g}x  {ours / max(dyn, ao):>10.3g}x"
        return line

    for sparsity in sparsities:
        prune_to(blocks, current, sparsity, rng)
        current = sparsity
        print(one_sparsity(sparsity), flush=True)
    print("\nRatios are dense time / format time, the dense time (the faster of numpy and "
          "torch) measured in the same interleaved rounds; GB/s are weight bytes streamed per "
          "second (dense's in the 'dense GB/s' column).")
    return 0


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])
    sys.exit(main())
