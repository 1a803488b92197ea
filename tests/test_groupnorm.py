"""GroupNorm (the nets' faster GroupNormalization) against Keras' own, and ResBlock's folded scale-shift."""
import keras
import numpy as np
import pytest
from keras import layers, ops

from ldseg_suite.nets.layers import GroupNorm, ResBlock


def _pair(shape, groups, seed):
    rng = np.random.default_rng(seed)
    ours, ref = GroupNorm(groups), layers.GroupNormalization(groups)
    ours.build(shape)
    ref.build(shape)
    gamma, beta = rng.normal(1, 0.5, shape[-1]), rng.normal(0, 0.5, shape[-1])
    for layer in (ours, ref):
        layer.gamma.assign(gamma.astype("float32"))
        layer.beta.assign(beta.astype("float32"))
    return ours, ref


@pytest.mark.parametrize("shape, groups", [((2, 16, 16, 32), 8), ((3, 8, 8, 12), 4), ((1, 6, 5, 4, 16), 8),
                                           ((2, 4, 4, 3), 1)])
def test_group_norm_matches_keras(shape, groups):
    ours, ref = _pair(shape, groups, 0)
    x = np.random.default_rng(1).normal(2.0, 3.0, shape).astype("float32")  # offset mean: a stability check
    np.testing.assert_allclose(ours(x), ref(x), atol=2e-5)
    np.testing.assert_allclose(ours.norm_silu(x), ops.silu(ref(x)), atol=2e-5)
    assert [w.path.split("/")[-1] for w in ours.weights] == [w.path.split("/")[-1] for w in ref.weights]


def test_resblock_folded_scale_shift_matches_the_unfolded_formula():
    keras.utils.set_random_seed(0)
    block = ResBlock(16, 2, conditioned=True, semantic=True)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 8)).astype("float32")
    emb = np.random.default_rng(3).normal(size=(2, 32)).astype("float32")
    z = np.random.default_rng(4).normal(size=(2, 5)).astype("float32")
    block([x, emb, z])  # builds the block
    block.semantic_proj.kernel.assign(np.random.default_rng(5).normal(0, 0.3, (5, 16)).astype("float32"))
    out = np.asarray(block([x, emb, z]))
    # the formula before folding: keras GroupNormalization, then h * (1 + scale) + shift, then * (1 + proj(z))
    ref_norm = {}
    for name in ("norm1", "norm2"):
        mine = getattr(block, name)
        ref_norm[name] = layers.GroupNormalization(mine.groups)
        ref_norm[name].build((None, 8, 8, mine.gamma.shape[0]))
        ref_norm[name].set_weights(mine.get_weights())
    h = block.conv1(ops.silu(ref_norm["norm1"](x)))
    h = ref_norm["norm2"](h)
    scale, shift = ops.split(block.emb_proj(ops.silu(emb)), 2, axis=-1)
    h = h * (1.0 + scale[:, None, None]) + shift[:, None, None]
    h = h * (1.0 + block.semantic_proj(z)[:, None, None])
    ref = block.conv2(ops.silu(h)) + block.skip(x)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert np.abs(out).max() > 0.1


def test_group_norm_under_mixed_float16_keeps_float32_statistics():
    shape = (2, 8, 8, 16)
    ours, ref = _pair(shape, 8, 3)
    half = GroupNorm(8, dtype="mixed_float16")
    half.build(shape)
    half.set_weights(ours.get_weights())
    x = np.random.default_rng(4).normal(5.0, 2.0, shape).astype("float32")
    out = half(x)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    np.testing.assert_allclose(np.asarray(out, "float32"), ref(x), atol=1e-2)
    np.testing.assert_allclose(np.asarray(half.norm_silu(x), "float32"), ops.silu(ref(x)), atol=1e-2)
