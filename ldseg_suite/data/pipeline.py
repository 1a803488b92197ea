"""The tf.data builders for 2D, 2D+t and 3D samples (in-memory arrays, or cases read lazily with patches), plus
per-case resizing and normalisation."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from skimage.transform import resize

from ldseg_suite.errors import LDSegError


def normalize(image: np.ndarray, mode: str = "minmax", intensity_range=()) -> np.ndarray:
    """Per case and channel: ``minmax`` to [0, 1], ``zscore``, or ``none``; ``range``: the same fixed window for
    every case, ``intensity_range`` = (a_min, a_max) clipped and scaled to [0, 1] (CT in Hounsfield units)."""
    image = image.astype(np.float32)
    axes = tuple(range(image.ndim - 1))
    if mode == "range":
        a_min, a_max = intensity_range
        return (np.clip(image, a_min, a_max) - a_min) / np.float32(a_max - a_min)
    if mode == "minmax":
        lo, hi = image.min(axis=axes), image.max(axis=axes)
        return (image - lo) / np.where(hi > lo, hi - lo, 1.0)
    if mode == "zscore":
        return (image - image.mean(axis=axes)) / np.maximum(image.std(axis=axes), 1e-6)
    if mode == "none":
        return image
    raise LDSegError(f"Normalize = {mode}: expected minmax, zscore, range or none")


def _size(size, spatial_shape, what) -> tuple:
    size = tuple(int(s) for s in size)
    if len(size) != len(spatial_shape) or min(size) < 1:
        raise LDSegError(f"resize to {size}: {what} has spatial shape {tuple(spatial_shape)}; "
                         f"expected {len(spatial_shape)} positive sizes")
    return size


def resize_image(image: np.ndarray, size) -> np.ndarray:
    """Linear resize of (*spatial, C) to (*size, C), anti-aliased when shrinking."""
    size = _size(size, image.shape[:-1], "the image")
    if image.shape[:-1] == size:
        return image.astype(np.float32)
    shrink = any(s < o for s, o in zip(size, image.shape[:-1]))
    return resize(image, size + image.shape[-1:], order=1, anti_aliasing=shrink,
                  preserve_range=True).astype(np.float32)


def resize_label(label: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of a label map (no anti-aliasing, so no new label values)."""
    size = _size(size, label.shape, "the label")
    if label.shape == size:
        return label.astype(np.int32)
    return resize(label, size, order=0, anti_aliasing=False, preserve_range=True).astype(np.int32)


def restore_label(label: np.ndarray, shape) -> np.ndarray:
    """A network-size label map back to the case's original spatial shape (``Geometry.shape``)."""
    return resize_label(label, shape)


def prepare_case(case, size, normalize_mode: str = "minmax", intensity_range=()):
    """(normalised image at network size, label at network size or None)."""
    image = resize_image(normalize(case.image, normalize_mode, intensity_range), size)
    label = None if case.label is None else resize_label(case.label, size)
    return image, label


def _augment(image, label, seed, spatial: int):
    """Flips on every spatial axis and 90-degree turns in (H, W), identical for image and label;
    intensity jitter on the image. Stateless ops seeded per element."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    flips = tf.random.stateless_uniform([spatial], seeds[0]) < 0.5
    for axis in range(spatial):
        image = tf.cond(flips[axis], lambda: tf.reverse(image, [axis]), lambda: image)
        label = tf.cond(flips[axis], lambda: tf.reverse(label, [axis]), lambda: label)
    if image.shape[0] == image.shape[1]:  # 90-degree turns keep the shape only for square (H, W)
        k = tf.random.stateless_uniform([], seeds[1], 0, 4, dtype=tf.int32)
        image, label = _rot90(image, k), _rot90(label, k)
    scale = tf.random.stateless_uniform([], seeds[2], 0.9, 1.1)
    shift = tf.random.stateless_uniform([], seeds[3], -0.05, 0.05)
    return image * scale + shift, label


def _rot90(x, k):
    """Rotate by k * 90 degrees in the (H, W) plane: transpose(H, W) then flip H, k times."""
    perm = [1, 0] + list(range(2, len(x.shape)))

    def once(y):
        return tf.reverse(tf.transpose(y, perm), [0])

    return tf.switch_case(k, [lambda: x, lambda: once(x), lambda: once(once(x)), lambda: once(once(once(x)))])


def make_dataset(images, labels, classes: int, batch_size: int, augment: bool = False, shuffle: bool = False,
                 seed: int = 0, repeat: bool = False) -> tf.data.Dataset:
    """(image, one-hot label) batches; images (N, *size, C) float32, labels (N, *size) int."""
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    if images.ndim not in (4, 5) or labels.shape != images.shape[:-1] or len(images) == 0:
        raise LDSegError(f"make_dataset: images {images.shape} and labels {labels.shape}; expected images "
                         "(N, H, W[, D], C) and labels (N, H, W[, D]) with N > 0")
    if labels.min() < 0 or labels.max() >= classes:
        raise LDSegError(f"make_dataset: label values {labels.min()}..{labels.max()} outside [0, {classes - 1}]")
    spatial = images.ndim - 2
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:  # before repeat: every epoch sees every case once, in a new (seeded) order
        ds = ds.shuffle(min(len(images), 1024), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if augment:
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda pair, i: _augment(pair[0], pair[1], tf.stack([tf.cast(seed, tf.int64), i]), spatial),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, classes, dtype=tf.float32)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def case_dataset(reader, classes: int, batch_size: int, patch=(), size=(), fg_fraction: float = 0.33,
                 augment: bool = False, shuffle: bool = False, seed: int = 0, repeat: bool = False,
                 channels: int = 1) -> tf.data.Dataset:
    """(image, one-hot label) batches read lazily from ``reader`` (a ``cases.CaseReader``).

    With ``patch`` every element is a random crop of that size (``fg_fraction`` of them centred on foreground,
    seeded by (seed, element counter) so a run is reproducible); else each case whole at ``size`` (the reader
    resizes). Memory is set by the batch, the patch and the reader's cache, not by the number of cases.
    """
    from ldseg_suite.data import patches

    if len(reader) == 0:
        raise LDSegError("case_dataset: no cases")
    shape = tuple(int(s) for s in (patch or size))
    spatial = len(shape)

    def load(index, counter):
        rng = np.random.default_rng([int(seed), int(counter)])
        case = reader[int(index)]
        if case.label is None:
            raise LDSegError(f"{case.name}: training needs a label for every case")
        if not patch:
            return case.image, case.label
        if case.points is None:
            case.points = patches.foreground_points(case.label, np.random.default_rng([int(seed), int(index)]))
        image, label, _ = patches.training_patch(case.image, case.label, shape, rng, fg_fraction, case.points)
        return image.astype(np.float32), label.astype(np.int32)

    ds = tf.data.Dataset.range(len(reader))
    if shuffle:
        ds = ds.shuffle(len(reader), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))

    def read(index, counter):
        image, label = tf.numpy_function(load, [index, counter], [tf.float32, tf.int32], stateful=False)
        image.set_shape(shape + (channels,))
        label.set_shape(shape)
        return image, label, counter

    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment:
        ds = ds.map(lambda x, y, i: _augment(x, y, tf.stack([tf.cast(seed, tf.int64), i]), spatial),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda x, y, i: (x, y))
    ds = ds.map(lambda x, y: (x, tf.one_hot(y, classes, dtype=tf.float32)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def array_dataset(arrays, batch_size: int, seed: int = 0, map_fn=None, shuffle: bool = True, repeat: bool = True,
                  drop_remainder: bool = True) -> tf.data.Dataset:
    """Batches of in-memory arrays without labels (or any tuple of arrays): slices for TPDM, cine slices for DiffAE,
    images for the 2D generators. Shuffled per epoch (seeded) before ``repeat``; ``map_fn`` (e.g. a seeded
    augmentation) runs in parallel."""
    ds = tf.data.Dataset.from_tensor_slices(arrays)
    n = len(arrays[0]) if isinstance(arrays, tuple) else len(arrays)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if map_fn is not None:
        ds = ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
