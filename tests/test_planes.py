"""The plane sampler: known planes of synthetic volumes, and gradients to the volume."""
import numpy as np
import tensorflow as tf

from ldseg_suite.inverse.planes import plane_coordinates, sample_plane


def test_axis_aligned_plane_equals_the_slice():
    vol = np.random.default_rng(0).random((10, 12, 8)).astype(np.float32)
    plane = sample_plane(vol, origin=(4.5, 5.5, 3), u=(1, 0, 0), v=(0, 1, 0), shape=(10, 12))
    np.testing.assert_allclose(plane.numpy(), vol[:, :, 3], atol=1e-6)


def test_oblique_plane_of_a_linear_volume_is_exact():
    i, j, k = np.meshgrid(np.arange(20), np.arange(20), np.arange(20), indexing="ij")
    vol = (2 * i + 3 * j - k).astype(np.float32)  # trilinear interpolation reproduces a linear field
    origin, u, v = (10, 9.5, 10.2), (1, 1, 0), (0, 0.3, 1)
    coords = plane_coordinates(origin, u, v, (6, 5))
    expected = 2 * coords[..., 0] + 3 * coords[..., 1] - coords[..., 2]
    np.testing.assert_allclose(sample_plane(vol, origin, u, v, (6, 5)).numpy(), expected, atol=1e-3)


def test_outside_is_zero_and_gradients_reach_the_volume():
    vol = tf.Variable(tf.ones((8, 8, 8)))
    with tf.GradientTape() as tape:
        plane = sample_plane(vol, origin=(3.5, 3.5, 3.5), u=(1, 1, 1), v=(1, -1, 0), shape=(16, 16))
        loss = tf.reduce_sum(plane)
    grad = tape.gradient(loss, vol).numpy()
    assert plane.numpy()[0, 0] == 0.0 and plane.numpy()[8, 8] == 1.0
    assert grad.sum() > 0 and (grad > 0).sum() > 16
