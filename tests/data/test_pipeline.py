"""pipeline: normalisation, resizing there and back, and the one tf.data builder for 2D, 2D+t and 3D."""
import numpy as np
import pytest

from ldseg_suite.data import layout, pipeline, readers
from ldseg_suite.errors import LDSegError


def test_normalize_per_channel():
    img = np.stack([np.linspace(2, 6, 16).reshape(4, 4), np.full((4, 4), 7.0)], -1).astype(np.float32)
    mm = pipeline.normalize(img, "minmax")
    assert mm[..., 0].min() == 0.0 and mm[..., 0].max() == 1.0 and mm[1, 0, 0] == pytest.approx(4 / 15)
    assert np.all(mm[..., 1] == 0.0)  # a constant channel does not divide by zero
    z = pipeline.normalize(img, "zscore")
    assert z[..., 0].mean() == pytest.approx(0, abs=1e-6) and z[..., 0].std() == pytest.approx(1, abs=1e-5)
    np.testing.assert_array_equal(pipeline.normalize(img, "none"), img)
    with pytest.raises(LDSegError, match="Normalize = max"):
        pipeline.normalize(img, "max")


def test_normalize_range_is_one_fixed_window_for_every_case():
    from ldseg_suite import config, sections

    ct = np.array([-3024.0, -1000.0, 0.0, 40.0, 1000.0, 3000.0], np.float32).reshape(1, 6, 1)  # HU, with metal
    win = pipeline.normalize(ct, "range", (-1000, 1000))
    np.testing.assert_allclose(win[0, :, 0], [0.0, 0.0, 0.5, 0.52, 1.0, 1.0])
    # a case without the metal gets the same values for the same HU (minmax would not)
    np.testing.assert_allclose(pipeline.normalize(ct[:, :4], "range", (-1000, 1000)), win[:, :4])
    assert not np.allclose(pipeline.normalize(ct[:, :4], "minmax"), pipeline.normalize(ct, "minmax")[:, :4])
    base = "[Run]\nMethod = unet\n[Data]\nRoot = x\nChannels = 1\nClasses = 2\n"
    for extra, message in (("Normalize = range", "set both"), ("IntensityRange = -1000, 1000", "set both"),
                           ("Normalize = range\nIntensityRange = 10, -10", "expected a_min < a_max")):
        with pytest.raises(LDSegError, match=message):
            config.parse(base + extra, "my.ini", sections.schema_for("unet", "my.ini"))


def test_resize_image_label_and_restore():
    lab = np.zeros((50, 70), np.int32)
    lab[10:30, 20:50] = 2
    small = pipeline.resize_label(lab, (32, 32))
    assert small.shape == (32, 32) and small.dtype == np.int32 and set(np.unique(small)) == {0, 2}
    back = pipeline.restore_label(small, (50, 70))
    assert back.shape == (50, 70) and (back == lab).mean() > 0.97
    img = np.random.default_rng(0).random((20, 24, 10, 2)).astype(np.float32)
    out = pipeline.resize_image(img, (16, 16, 8))
    assert out.shape == (16, 16, 8, 2) and out.dtype == np.float32
    assert out.mean() == pytest.approx(img.mean(), abs=0.02) and out.std() < img.std()  # smoothed, not clipped
    with pytest.raises(LDSegError, match="expected 3 positive sizes"):
        pipeline.resize_image(img, (16, 16))


def test_prepare_case_normalizes_then_resizes():
    case = layout.Case("c", np.linspace(10, 20, 40 * 30).reshape(40, 30, 1).astype(np.float32),
                       np.ones((40, 30), np.int32), readers.plain_geometry((40, 30)))
    image, label = pipeline.prepare_case(case, (16, 16), "minmax")
    assert image.shape == (16, 16, 1) and label.shape == (16, 16) and label.dtype == np.int32
    assert 0 <= image.min() < 0.05 and 0.95 < image.max() <= 1


@pytest.mark.parametrize("shape, channels", [((16, 16), 3), ((16, 16, 8), 1), ((12, 16, 4), 2)])
def test_dataset_shapes_and_dtypes(shape, channels):
    n = 5
    images = np.random.default_rng(0).random((n, *shape, channels)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, 3, (n, *shape)).astype(np.int32)
    ds = pipeline.make_dataset(images, labels, classes=3, batch_size=2, augment=True, shuffle=True, seed=0)
    batches = list(ds)
    assert [int(x.shape[0]) for x, _ in batches] == [2, 2, 1]
    x, y = batches[0]
    assert tuple(x.shape) == (2, *shape, channels) and x.dtype == "float32"
    assert tuple(y.shape) == (2, *shape, 3) and y.dtype == "float32"
    np.testing.assert_array_equal(np.asarray(y).sum(-1), 1.0)  # one-hot


def test_dataset_without_augmentation_keeps_values_and_order():
    images = np.arange(4 * 16 * 16).reshape(4, 16, 16, 1).astype(np.float32)
    labels = (np.arange(4)[:, None, None] * np.ones((1, 16, 16))).astype(np.int32)
    x, y = next(iter(pipeline.make_dataset(images, labels, classes=4, batch_size=4)))
    np.testing.assert_array_equal(np.asarray(x), images)
    np.testing.assert_array_equal(np.argmax(np.asarray(y), -1), labels)


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 8), (16, 12)])
def test_augmentation_moves_image_and_label_together(shape):
    """Image channel 0 == label: after flips/rotations and the intensity jitter (|x - label| <= 2 * 0.1 + 0.05)
    rounding the image gives the label back pixel for pixel."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (6, *shape)).astype(np.int32)
    images = np.stack([labels, rng.random(labels.shape)], -1).astype(np.float32)
    changed = 0
    for seed in range(5):
        x, y = next(iter(pipeline.make_dataset(images, labels, classes=3, batch_size=6, augment=True, seed=seed)))
        x, y = np.asarray(x), np.argmax(np.asarray(y), -1)
        assert x.shape == images.shape
        np.testing.assert_array_equal(np.rint(x[..., 0]).astype(np.int32), y)
        assert not np.array_equal(x[..., 0], y)  # the intensity jitter is applied
        changed += int(not np.array_equal(y, labels))
    assert changed >= 1  # some seed flipped or rotated something


def test_augmentation_and_shuffle_are_reproducible():
    rng = np.random.default_rng(2)
    images = rng.random((8, 16, 16, 1)).astype(np.float32)
    labels = rng.integers(0, 2, (8, 16, 16)).astype(np.int32)

    def run(seed):
        ds = pipeline.make_dataset(images, labels, 2, 4, augment=True, shuffle=True, seed=seed, repeat=True)
        return np.concatenate([np.asarray(x) for x, _ in ds.take(4)])

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_shuffle_with_repeat_shows_every_case_once_per_epoch():
    images = np.arange(6, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 1), np.float32)
    labels = np.zeros((6, 4, 4), np.int32)
    ds = pipeline.make_dataset(images, labels, 2, 3, shuffle=True, seed=0, repeat=True)
    ids = np.concatenate([np.asarray(x)[:, 0, 0, 0] for x, _ in ds.take(4)])
    assert sorted(ids[:6]) == list(range(6)) and sorted(ids[6:]) == list(range(6))


def test_dataset_input_checks():
    images = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(LDSegError, match="label values 0..3 outside \\[0, 2\\]"):
        pipeline.make_dataset(images, np.arange(4).repeat(32).reshape(2, 8, 8), classes=3, batch_size=1)
    with pytest.raises(LDSegError, match="expected images"):
        pipeline.make_dataset(images, np.zeros((2, 8, 7), np.int32), classes=3, batch_size=1)
