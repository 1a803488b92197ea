"""(a) the anchor's predict() loop and (c) our compiled sampler compute the same thing."""
import numpy as np
import tensorflow as tf

from benchmarks.sampler import compiled_sampler, make_denoiser, predict_loop, schedule
from ldseg_suite.diffusion.samplers import initial_noise


def test_predict_loop_and_compiled_sampler_agree_step_by_step():
    T, steps, spatial = 50, 10, (16, 16)
    model = make_denoiser(spatial, base=8)
    x_T = initial_noise((2,) + spatial + (4,), 3)
    cond = tf.random.stateless_normal((2,) + spatial + (16,), [4, 5])

    recorded = []
    final_a = predict_loop(model, x_T, cond, "DDIM", steps, eta=0.5, seed=7, record=recorded, T=T)

    ts = tf.constant(schedule("DDIM", steps, T)[1])
    buffer = tf.Variable(tf.zeros((steps,) + tuple(x_T.shape)))

    def recording_eps(z, c, t):
        eps = model([tf.concat([z, c], -1), t], training=False)
        index = tf.argmax(tf.cast(tf.equal(ts, t[0]), tf.int32))
        buffer[index].assign(eps)
        return eps

    sampler = compiled_sampler(model, "DDIM", steps, eta=0.5, T=T, eps_fn=recording_eps)
    final_c = np.asarray(sampler(x_T, cond, 7)["x0"])
    for i, eps_a in enumerate(recorded):
        np.testing.assert_allclose(buffer[i].numpy(), eps_a, rtol=1e-4, atol=1e-6, err_msg=f"step {i}")
    np.testing.assert_allclose(final_c, final_a, atol=1e-4)
    assert np.abs(final_c).max() > 0.1  # a real result, not a collapse to zero
