"""Sliding-window inference: tiling, exact blending, the Gaussian map, one trace for many windows, errors."""
import numpy as np
import pytest

from ldseg_suite.errors import LDSegError
from ldseg_suite.inference import (
    MIN_WEIGHT,
    SlidingWindowInferer,
    gaussian_importance,
    sliding_window,
    window_starts,
)

# (spatial shape, window): 2D and 3D, odd sizes, smaller than the window along some or all axes
CASES = [((37, 23), (16, 16)), ((16, 16), (16, 16)), ((9, 40), (16, 12)), ((5, 7), (8, 8)),
         ((19, 13, 21), (8, 8, 8)), ((6, 17, 9), (8, 8, 8)), ((3, 4, 5), (6, 6, 6))]
OVERLAPS = [0.0, 0.5, 0.75]


@pytest.mark.parametrize("shape, window", [(s, w) for s, w in CASES if all(a >= b for a, b in zip(s, w))]
                         + [((40, 40), (16, 16)), ((17, 33, 10), (8, 8, 8))])
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_window_starts_cover_every_voxel(shape, window, overlap):
    starts = window_starts(shape, window, overlap)
    count = np.zeros(shape, np.int32)
    for s in starts:
        count[tuple(slice(a, a + w) for a, w in zip(s, window))] += 1
    assert count.min() >= 1
    assert len(set(starts)) == len(starts)
    for axis, (n, w) in enumerate(zip(shape, window)):
        axis_starts = sorted({s[axis] for s in starts})
        step = max(1, int(w * (1 - overlap)))
        assert axis_starts[0] == 0 and axis_starts[-1] == n - w  # last window flush with the end
        assert all(b - a <= step for a, b in zip(axis_starts, axis_starts[1:]))
        assert len(axis_starts) == (1 if n == w else int(np.ceil((n - w) / step)) + 1)
    if overlap == 0.0 and all(n % w == 0 for n, w in zip(shape, window)):
        assert count.max() == 1  # no overlap, exact tiling: every voxel exactly once


@pytest.mark.parametrize("shape, window", CASES)
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_constant_blend_of_ones_is_exactly_one(shape, window, overlap):
    image = np.random.default_rng(0).normal(size=shape + (2,)).astype(np.float32)
    seen = []

    def ones(x):
        seen.append(x.shape)
        return np.ones(x.shape[:-1] + (3,), np.float32)

    out = sliding_window(image, ones, window, overlap, blend="constant", batch_size=3)
    assert out.shape == shape + (3,) and out.dtype == np.float32
    assert np.array_equal(out, np.ones_like(out))
    assert set(seen) == {(3,) + tuple(window) + (2,)}  # every call: exactly batch_size windows


def _one_hot_of_label_channel(x, classes=3):
    """A 'model' whose output depends only on the window's content: one-hot of the label in channel 1."""
    return np.eye(classes, dtype=np.float32)[np.rint(x[..., 1]).astype(int)]


@pytest.mark.parametrize("shape, window", CASES)
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("pad_mode", ["constant", "edge", "reflect"])
def test_one_hot_from_content_is_reproduced_exactly(shape, window, blend, pad_mode):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=shape)
    image = np.stack([rng.normal(size=shape), labels], -1).astype(np.float32)
    out = sliding_window(image, _one_hot_of_label_channel, window, 0.5, blend=blend, batch_size=4,
                         pad_mode=pad_mode)
    assert np.array_equal(out, np.eye(3, dtype=np.float32)[labels])


def _reference_blend(image, predict, window, overlap, weight, pad_mode):
    """Pad the whole case, predict every window one at a time, blend on the padded grid, crop."""
    spatial = image.shape[:-1]
    padded_shape = tuple(max(n, w) for n, w in zip(spatial, window))
    pads = [((p - n) // 2, p - n - (p - n) // 2) for p, n in zip(padded_shape, spatial)]
    padded = np.pad(image, pads + [(0, 0)], mode=pad_mode).astype(np.float64)
    num, den = None, np.zeros(padded_shape)
    for s in window_starts(padded_shape, window, overlap):
        sl = tuple(slice(a, a + w) for a, w in zip(s, window))
        y = np.asarray(predict(padded[sl][None].astype(np.float32)))[0].astype(np.float64)
        num = np.zeros(padded_shape + y.shape[-1:]) if num is None else num
        num[sl] += weight[..., None] * y
        den[sl] += weight
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, spatial))
    return (num / den[..., None])[crop]


@pytest.mark.parametrize("shape, window", [((37, 23), (16, 16)), ((5, 30), (8, 8)), ((19, 6, 13), (8, 8, 8))])
@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_gaussian_blend_equals_a_direct_weighted_average(shape, window, pad_mode):
    """Position-dependent outputs (a window's mean added to the content) blend as sum(w * pred) / sum(w)."""
    image = np.random.default_rng(2).normal(size=shape + (2,)).astype(np.float32)

    def predict(x):
        axes = tuple(range(1, x.ndim - 1))
        return np.concatenate([x * 2.0 + x.mean(axis=axes, keepdims=True), x[..., :1] ** 2], -1)

    out = sliding_window(image, predict, window, 0.5, blend="gaussian", batch_size=5, pad_mode=pad_mode)
    ref = _reference_blend(image, predict, window, 0.5, gaussian_importance(window).astype(np.float64), pad_mode)
    assert out.shape == shape + (3,)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    flat = sliding_window(image, predict, window, 0.5, blend="constant", batch_size=5, pad_mode=pad_mode)
    assert np.abs(out - flat).max() > 1e-3  # the weights matter: Gaussian and constant blends differ


@pytest.mark.parametrize("window", [(9,), (15, 9), (16, 10), (8, 8, 8), (7, 12, 5)])
def test_gaussian_importance_centre_symmetry_positive(window):
    g = gaussian_importance(window)
    assert g.shape == window and g.dtype == np.float32
    assert g.max() == pytest.approx(1.0, abs=1e-6) and g.min() >= MIN_WEIGHT > 0
    centre = tuple(slice((w - 1) // 2, w // 2 + 1) for w in window)  # the centre voxel(s)
    np.testing.assert_allclose(g[centre], 1.0, atol=1e-6)
    for axis in range(len(window)):
        np.testing.assert_array_equal(g, np.flip(g, axis))  # symmetric about the centre on every axis
    assert g.ravel()[0] < 0.02  # the corner is far down the Gaussian (4 sigma along each axis)


def test_gaussian_importance_is_the_analytic_separable_gaussian():
    def analytic_1d(n, scale):
        x = np.arange(n) - (n - 1) / 2
        return np.exp(-x ** 2 / (2 * (scale * n) ** 2))

    g1 = gaussian_importance((33,))
    np.testing.assert_allclose(g1, np.maximum(analytic_1d(33, 0.125), MIN_WEIGHT), rtol=1e-6)
    assert g1[16] == 1.0 and g1[16 + 4] == pytest.approx(np.exp(-16 / (2 * 4.125 ** 2)), rel=1e-6)
    g2 = gaussian_importance((33, 20), sigma_scale=0.25)
    outer = np.outer(analytic_1d(33, 0.25), analytic_1d(20, 0.25))
    np.testing.assert_allclose(g2, np.maximum(outer / outer.max(), MIN_WEIGHT), rtol=1e-6)
    assert np.all(g2 > MIN_WEIGHT)  # with sigma = size / 4 nothing is clipped: purely separable
    wide = gaussian_importance((9, 9, 9), sigma_scale=0.5)
    np.testing.assert_allclose(wide[4, 4], wide[4, 4, 4] * np.exp(-(np.arange(9) - 4) ** 2 / (2 * 4.5 ** 2)),
                               rtol=1e-6)


def test_many_windows_reuse_one_trace():
    import keras
    import tensorflow as tf

    from ldseg_suite.nets.layers import conv

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1))
    model = keras.Model(inp, conv(2, 3)(keras.layers.Activation("relu")(conv(2, 4)(inp))))
    traces = []

    @tf.function
    def probabilities(x):
        traces.append(1)  # runs only while tracing
        return tf.nn.softmax(model(x, training=False), axis=-1)

    image = np.random.default_rng(3).normal(size=(40, 37, 1)).astype(np.float32)
    calls = []

    def predict(x):
        calls.append(x.shape)
        return probabilities(x)

    out = sliding_window(image, predict, (16, 16), overlap=0.5, batch_size=3)
    n_windows = len(window_starts((40, 37), (16, 16), 0.5))
    assert n_windows == 16 and n_windows % 3 != 0  # more windows than a batch, a partial last batch
    assert len(calls) == 6 and set(calls) == {(3, 16, 16, 1)}
    assert len(traces) == 1
    assert out.shape == (40, 37, 3)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)  # blended probabilities stay probabilities
    sliding_window(image[:20], predict, (16, 16), overlap=0.5, batch_size=3)  # another case, same window
    assert len(traces) == 1


def test_inferer_matches_function_and_shows_progress(capsys):
    image = np.random.default_rng(4).normal(size=(20, 18, 1)).astype(np.float32)

    def predict(x):
        return np.concatenate([x, -x], -1)

    inferer = SlidingWindowInferer((8, 8), overlap=0.25, blend="gaussian", batch_size=2, progress=True)
    out = inferer(image, predict)
    np.testing.assert_allclose(out, np.concatenate([image, -image], -1), atol=1e-6)  # identity blends to itself
    assert "window batch" in capsys.readouterr().out
    np.testing.assert_array_equal(out, sliding_window(image, predict, (8, 8), 0.25, "gaussian", 2))


IMG2 = np.zeros((10, 10, 1), np.float32)


@pytest.mark.parametrize("call, words", [
    (lambda: sliding_window(IMG2, _one_hot_of_label_channel, (4, 4, 4)), "3 axes"),
    (lambda: sliding_window(IMG2[..., 0], _one_hot_of_label_channel, (4, 4)), "spatial axes"),
    (lambda: sliding_window(IMG2, _one_hot_of_label_channel, (4, 4), overlap=1.0), "overlap"),
    (lambda: sliding_window(IMG2, _one_hot_of_label_channel, (4, 4), overlap=-0.1), "overlap"),
    (lambda: sliding_window(IMG2, _one_hot_of_label_channel, (4, 4), blend="mean"), "blend"),
    (lambda: sliding_window(IMG2, _one_hot_of_label_channel, (4, 0)), "positive"),
    (lambda: sliding_window(IMG2, _one_hot_of_label_channel, (4, 4), batch_size=0), "batch size"),
    (lambda: sliding_window(IMG2, _one_hot_of_label_channel, (4, 4), pad_mode="wrap"), "pad mode"),
    (lambda: sliding_window(IMG2, lambda x: x[:1], (4, 4)), "predict returned"),
    (lambda: window_starts((3, 10), (4, 4), 0.5), "smaller than the window"),
    (lambda: gaussian_importance((4, -1)), "positive"),
    (lambda: SlidingWindowInferer((8, 8), blend="median"), "blend"),
])
def test_argument_errors(call, words):
    with pytest.raises(LDSegError, match=words) as err:
        call()
    assert "\n" not in str(err.value)


def test_windows_are_the_image_voxels_and_memory_is_output_plus_weights():
    """predict sees the image's own windows, batch by batch; the only full-size allocations are out and wsum."""
    import tracemalloc

    image = np.arange(64 * 64 * 64, dtype=np.float32).reshape(64, 64, 64, 1)  # 1 MiB
    starts = window_starts((64, 64, 64), (8, 8, 8), 0.5)
    seen = []

    def predict(x):
        if len(seen) < 3:
            seen.append(x.copy())
        return x

    tracemalloc.start()
    out = sliding_window(image, predict, (8, 8, 8), overlap=0.5, batch_size=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(starts) == 15 ** 3  # all windows at once would be 6.6 MiB
    assert peak < 2 * image.nbytes + 512 * 1024  # out + weight sum + a few windows
    np.testing.assert_allclose(out, image, rtol=1e-6)  # the identity blends back to the image
    for s, x in zip(starts, np.concatenate(seen)):
        np.testing.assert_array_equal(x, image[tuple(slice(a, a + 8) for a in s)])
