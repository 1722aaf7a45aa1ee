"""Shapes, patterns, pruning and the packaged layer shapes."""

import numpy as np
import pytest

from sparsegemm.bench.workloads import (
    Pattern,
    grid,
    layer_grid,
    load_layer_shapes,
    magnitude_prune,
    parse_pattern,
    parse_shape,
    parse_sparsity,
)


def test_parsers_accept_the_documented_forms():
    assert parse_shape("4096x1024") == (4096, 1024)
    assert parse_pattern("unstructured") == Pattern()
    assert parse_pattern("block:4x1").blocksize == (4, 1)
    assert parse_pattern("block:4x1").name == "block:4x1"
    assert parse_sparsity("0.95") == 0.95


@pytest.mark.parametrize("text", ["4096", "0x4", "ax4", "4x4x4"])
def test_bad_shapes_are_rejected(text):
    with pytest.raises(ValueError, match="OUTxIN"):
        parse_shape(text)


@pytest.mark.parametrize("text", ["block", "block:0x4", "block:4", "nm:2:4"])
def test_bad_patterns_are_rejected(text):
    with pytest.raises(ValueError, match="pattern"):
        parse_pattern(text)


@pytest.mark.parametrize("text", ["1", "-0.1", "1.5"])
def test_bad_sparsities_are_rejected(text):
    with pytest.raises(ValueError, match="sparsity"):
        parse_sparsity(text)


def test_unstructured_pruning_zeroes_exactly_the_smallest():
    weight = np.random.default_rng(0).standard_normal((32, 48)).astype(np.float32)
    pruned = magnitude_prune(weight, 0.75, Pattern())
    assert np.count_nonzero(pruned) == 32 * 48 // 4
    kept = np.abs(weight[pruned != 0])
    dropped = np.abs(weight[pruned == 0])
    assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(pruned[pruned != 0], weight[pruned != 0])


def test_block_pruning_zeroes_whole_blocks():
    weight = np.random.default_rng(1).standard_normal((16, 12)).astype(np.float32)
    pruned = magnitude_prune(weight, 0.5, Pattern((4, 2)))
    blocks = pruned.reshape(4, 4, 6, 2).transpose(0, 2, 1, 3).reshape(24, 8)
    nonzero_per_block = np.count_nonzero(blocks, axis=1)
    assert set(nonzero_per_block.tolist()) == {0, 8}
    assert (nonzero_per_block == 0).sum() == 12
    with pytest.raises(ValueError, match="multiple"):
        magnitude_prune(weight, 0.5, Pattern((5, 1)))


def test_grid_covers_every_combination():
    points = grid([(8, 8), (4, 8)], [1, 2], [0.5, 0.9], [Pattern()])
    assert len(points) == 8
    assert {(p.out_features, p.batch, p.sparsity) for p in points} == {
        (m, b, s) for m in (8, 4) for b in (1, 2) for s in (0.5, 0.9)
    }


def test_packaged_layer_shapes_cover_the_models():
    layers = load_layer_shapes()
    shapes = {(layer.model, layer.out_features, layer.in_features) for layer in layers}
    for bert in [(768, 768), (3072, 768), (768, 3072)]:
        assert ("bert-base", *bert) in shapes
    assert ("llm-7b", 4096, 4096) in shapes
    assert {layer.model for layer in layers} >= {"resnet50", "mobilenet-v1"}
    assert all(layer.n > 0 for layer in layers)
    conv = next(layer for layer in layers if layer.model == "resnet50")
    assert conv.n == 56 * 56
    points = layer_grid(layers, [0.9], [Pattern()])
    assert len(points) == len({(la.out_features, la.in_features, la.n) for la in layers})
    assert all(p.label for p in points)


def test_layer_shapes_file_errors_are_clear(tmp_path):
    bad = tmp_path / "layers.csv"
    bad.write_text("model,layer,kind,out_features,in_features,n\nx,y,linear,8,eight,1\n")
    with pytest.raises(ValueError, match="bad layer-shapes row"):
        load_layer_shapes(str(bad))
