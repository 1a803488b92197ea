"""Latent EBM priors (LEBM, LSD-EBM), the pixel EBM, the FID classifier and the Frechet distance."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from ldseg_suite.fid import frechet_distance
from ldseg_suite.inverse.slices import SliceAverage
from ldseg_suite.models.classifier import FeatureClassifier
from ldseg_suite.models.image_ebm import PixelEBM
from ldseg_suite.models.latent_ebm import LatentStandardizer, ShapeLEBM, ShapeLSDEBM, beta_schedule
from ldseg_suite.models.vae import ShapeVAE

SIZE = (16, 16, 16)


def tiny(cls, **kw):
    model = cls(SIZE, latent_dim=6, base_channels=4, levels=2, seed=0, **kw)
    model.build((None, *SIZE, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    return model


def batch(n=2):
    rng = np.random.default_rng(0)
    mask = (rng.random((n, *SIZE)) > 0.7).astype(np.float32)
    return mask[..., None], np.stack([1 - mask, mask], -1)


@pytest.mark.parametrize("cls", [ShapeVAE, ShapeLEBM, ShapeLSDEBM])
def test_train_step_runs_and_changes_the_weights(cls):
    kw = {} if cls is ShapeVAE else dict(langevin_steps=3, **({"segments": 4} if cls is ShapeLSDEBM else {}))
    model = tiny(cls, **kw)
    before = [w.numpy().copy() for w in model.trainable_variables]
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert all(np.isfinite(v) for v in logs.values())
    changed = [not np.allclose(a, w.numpy()) for a, w in zip(before, model.trainable_variables)]
    assert all(changed)
    if cls is not ShapeVAE:
        assert {"ebm_loss", "e_pos", "e_neg"} <= set(logs)


@pytest.mark.parametrize("cls", [ShapeLEBM, ShapeLSDEBM])
def test_a_jointly_trained_backbone_sees_the_learnt_prior(cls):
    """The backbone's prior term adds the learnt energy (LSD-EBM: the first segment's, E(sqrt(1 - beta_1) z, 0) /
    beta_1) to KL(q || N(0, I)), so the encoder's gradient changes with the energy's weights."""
    model = tiny(cls, langevin_steps=2, **({"segments": 4} if cls is ShapeLSDEBM else {}))
    z = tf.constant(np.random.default_rng(1).normal(size=(3, 6)), tf.float32)
    if cls is ShapeLSDEBM:
        beta = float(model.beta[0])
        by_hand = model.energy((1 - beta) ** 0.5 * z, tf.zeros(3, tf.int32)) / beta
    else:
        by_hand = model.energy(z)
    np.testing.assert_allclose(model.prior_extra(z).numpy(), by_hand.numpy(), rtol=1e-5)

    def encoder_grads():
        with tf.GradientTape() as tape:
            loss = model._loss_terms(batch(), training=False)[0]
        weights = [w for w in model.backbone_weights() if w.trainable]
        return [g.numpy() for g in tape.gradient(loss, weights) if g is not None]

    state = model.seed_generator.state.numpy()  # the same posterior draw in both passes
    before = encoder_grads()
    for w in model.energy.trainable_variables:
        w.assign(w + 0.5)
    model.seed_generator.state.assign(state)
    after = encoder_grads()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("cls", [ShapeLEBM, ShapeLSDEBM])
def test_fixed_backbone_trains_the_energy_only(cls):
    model = tiny(cls, langevin_steps=3, train_backbone=False)
    energy_paths = {v.path for v in model.energy.trainable_variables}
    assert {v.path for v in model.trainable_variables} == energy_paths
    fixed = [v for v in model.non_trainable_variables if v.path not in energy_paths and v.dtype == "float32"]
    before = [v.numpy().copy() for v in fixed]
    energy = [v.numpy().copy() for v in model.energy.trainable_variables]
    model.train_on_batch(*batch())
    assert len(fixed) > 10 and all(np.array_equal(a, v.numpy()) for a, v in zip(before, fixed))
    assert not any(np.array_equal(a, v.numpy()) for a, v in zip(energy, model.energy.trainable_variables))


def test_lsd_ebm_schedule_ends_near_pure_noise_and_samples_through_all_segments():
    model = tiny(ShapeLSDEBM, langevin_steps=2, segments=5)
    assert model.alpha_bar.shape == (6,) and float(model.alpha_bar[0]) == 1.0
    assert float(model.alpha_bar[-1]) < 0.01
    z, path = model.sample_latents(3, seed=1, capture=True)
    assert z.shape == (3, 6) and path.shape == (6, 3, 6)
    np.testing.assert_array_equal(z.numpy(), model.sample_latents(3, seed=1)[0].numpy())
    # linear: beta rises from 0.01 at the last sampling segment, alpha_bar_T = 0.01 as with the constant schedule
    beta = beta_schedule("linear", 6)
    np.testing.assert_allclose(np.diff(beta), np.diff(beta)[0], rtol=1e-6)
    assert beta[0] == pytest.approx(0.01) and 0.8 < beta[-1] < 0.9 and np.prod(1 - beta) == pytest.approx(0.01)
    np.testing.assert_allclose(beta_schedule("constant", 5), 1 - 0.01 ** 0.2)
    with pytest.raises(ValueError, match="cosine"):
        beta_schedule("cosine", 5)


def test_gradient_penalty_adds_the_mean_squared_energy_gradient():
    model = tiny(ShapeLSDEBM, langevin_steps=2, segments=4, grad_penalty=0.5, train_backbone=False)
    rng = np.random.default_rng(0)
    z_pos, z_neg = (tf.constant(rng.normal(size=(5, 6)), tf.float32) for _ in range(2))
    t = tf.constant([0, 1, 2, 3, 1])
    loss, logs = model.energy_loss(z_pos, z_neg, t)
    by_hand = []
    for z in (z_pos, z_neg):  # the squared gradient of E(z, t) / beta_t per example, by hand
        with tf.GradientTape() as tape:
            tape.watch(z)
            e = tf.reduce_sum(model.energy(z, t) / tf.gather(model.beta, t))
        by_hand.append(tf.reduce_sum(tape.gradient(e, z) ** 2, axis=-1))
    model.hp["grad_penalty"] = 0.0
    plain, plain_logs = model.energy_loss(z_pos, z_neg, t)
    assert "grad_sq" not in plain_logs and float(logs["grad_sq"]) > 0
    np.testing.assert_allclose(float(loss - plain), 0.5 * float(logs["grad_sq"]), rtol=1e-4)
    np.testing.assert_allclose(float(logs["grad_sq"]), float(tf.reduce_mean(tf.concat(by_hand, 0))), rtol=1e-4)
    model.hp["grad_penalty"] = 0.5
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert np.isfinite(logs["grad_sq"]) and logs["grad_sq"] > 0


@pytest.mark.parametrize("energy_scale", ["inverse_beta", "one"])
def test_lsd_ebm_chain_energy_is_the_learnt_term_plus_the_exact_gaussian_conditional(energy_scale):
    model = tiny(ShapeLSDEBM, langevin_steps=2, segments=4, energy_scale=energy_scale)
    rng = np.random.default_rng(1)
    y, z_next = (tf.constant(rng.normal(size=(3, 6)), tf.float32) for _ in range(2))
    t = tf.constant([0, 2, 3])
    beta = tf.gather(model.beta, t).numpy()
    learnt = model.energy(y, t).numpy() * (1 / beta if energy_scale == "inverse_beta" else 1.0)
    gauss = (0.5 * np.sum(y.numpy() ** 2, -1) / (1 - beta) + 0.5 * np.sum((z_next - y).numpy() ** 2, -1) / beta)
    np.testing.assert_allclose(model.chain_energy(y, (z_next, t)).numpy(), learnt + gauss, rtol=1e-5)
    assert model.get_config()["energy_scale"] == energy_scale


def test_latent_standardizer_learns_mean_and_std_and_round_trips():
    layer = LatentStandardizer(momentum=0.9)
    layer.build((None, 3))
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(4000, 3)) * [3.0, 0.5, 1.0] + [2.0, -1.0, 0.0]).astype(np.float32)
    np.testing.assert_allclose(layer(z).numpy(), z)  # the identity before any update
    for chunk in np.split(z, 100):  # 40 samples per batch: bias-corrected moving averages of E[z], E[z^2]
        layer.update(chunk)
    u = layer(z).numpy()
    np.testing.assert_allclose(u.mean(0), 0.0, atol=0.15)
    np.testing.assert_allclose(u.std(0), 1.0, atol=0.1)
    np.testing.assert_allclose(layer.inverse(layer(z)).numpy(), z, rtol=1e-5, atol=1e-5)
    shift, scale = (v.numpy() for v in layer.stats())
    np.testing.assert_allclose(shift, [2.0, -1.0, 0.0], atol=0.3)
    np.testing.assert_allclose(scale, [3.0, 0.5, 1.0], rtol=0.1)


def test_whitening_standardizer_learns_mean_and_covariance_and_round_trips():
    layer = LatentStandardizer(momentum=0.9, full=True)
    layer.build((None, 3))
    rng = np.random.default_rng(0)
    mix = np.array([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [0.3, -0.4, 1.0]])  # strongly correlated dimensions
    z = (rng.normal(size=(4000, 3)) @ mix.T + [2.0, -1.0, 0.0]).astype(np.float32)
    np.testing.assert_allclose(layer(z).numpy(), z, rtol=1e-3, atol=1e-3)  # the identity before any update
    for chunk in np.split(z, 100):
        layer.update(chunk)
    u = layer(z).numpy()
    np.testing.assert_allclose(u.mean(0), 0.0, atol=0.15)
    np.testing.assert_allclose(np.cov(u, rowvar=False), np.eye(3), atol=0.1)  # decorrelated, not only rescaled
    np.testing.assert_allclose(layer.inverse(layer(z)).numpy(), z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer(z.reshape(40, 100, 3)).numpy().reshape(-1, 3), u, rtol=1e-5, atol=1e-5)
    shift, chol = (v.numpy() for v in layer.stats())
    np.testing.assert_allclose(shift, [2.0, -1.0, 0.0], atol=0.3)
    np.testing.assert_allclose(chol @ chol.T, mix @ mix.T, atol=0.3)
    model = tiny(ShapeLSDEBM, segments=3, whiten=True, train_backbone=False)
    assert model.standardizer.full and model.get_config()["whiten"]
    assert model.standardizer.second.shape == (6, 6)


@pytest.mark.parametrize("cls", [ShapeLEBM, ShapeLSDEBM])
def test_standardized_prior_updates_its_statistics_and_returns_decoder_latents(cls):
    kw = {"segments": 3} if cls is ShapeLSDEBM else {}
    model = tiny(cls, langevin_steps=2, standardize=True, train_backbone=False, **kw)
    assert model.standardizer is not None
    assert len(model.prior_weights()) == len(model.energy.weights) + 3
    assert not any(w is v for w in model.prior_weights() for v in model.backbone_weights())
    model.train_on_batch(*batch())
    assert float(model.standardizer.count.numpy()) == 1.0
    shift, scale = (v.numpy() for v in model.standardizer.stats())
    assert np.all(scale > 0) and not np.allclose(scale, 1.0)
    x, _ = batch(2)
    mean = model.encode(x)[0]
    np.testing.assert_allclose(model.from_unit(model.to_unit(mean)).numpy(), mean.numpy(), rtol=1e-4, atol=1e-5)
    # Zero Langevin steps (LSD-EBM: start at segment 0) leave the encoder's mean: the result is back in z.
    extra = {"start": 0} if cls is ShapeLSDEBM else {}
    op = SliceAverage(4, axis=-2)
    z = model.posterior_refine(x, op.forward(x), op.forward, steps=0, step_size=0.1, weight=1.0, **extra)
    np.testing.assert_allclose(z.numpy(), mean.numpy(), rtol=1e-4, atol=1e-5)
    samples, path = model.sample_latents(5, seed=0, capture=True)
    assert samples.shape == (5, 6) and np.isfinite(path.numpy()).all()


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize("cls", [ShapeLEBM, ShapeLSDEBM])
def test_posterior_refinement_lowers_the_data_residual(cls, standardize):
    """Noise-free posterior Langevin with a strong data term fits the observed thick slices better than the
    encoder's mean does."""
    # 20 segments as shipped: the start at segment 1 keeps 89 % of the encoder's mean (with 4 segments only 56 %,
    # and 20 small steps of a tiny untrained prior did not always undo the injected noise)
    kw = {"segments": 20} if cls is ShapeLSDEBM else {}
    keras.utils.set_random_seed(0)  # unseeded initialisers otherwise depend on the tests run before
    model = tiny(cls, langevin_steps=2, standardize=standardize, **kw)
    if standardize:
        model.train_on_batch(*batch())  # the standardiser's statistics: no longer the identity
    x, _ = batch(2)
    op = SliceAverage(4, axis=-2)
    y = op.forward(x)

    def residual(z):
        return float(tf.reduce_sum((op.forward(tf.sigmoid(model.decode(z, x))) - y) ** 2))

    z0 = model.encode(x)[0]
    extra = {"start": 1} if cls is ShapeLSDEBM else {}
    z = model.posterior_refine(x, y, op.forward, steps=20, step_size=0.05, weight=10.0, noise=0.0, **extra)
    assert residual(z) < residual(z0), (residual(z), residual(z0))


def test_lsd_ebm_start_noise_scales_the_randomness_of_the_posterior_start():
    """[Reconstruct] StartNoise: 0 makes the LSD-EBM reconstruction deterministic (no seed dependence) when the
    Langevin steps are noise-free; 1 (as trained) depends on the seed."""
    keras.utils.set_random_seed(0)
    model = tiny(ShapeLSDEBM, langevin_steps=2, segments=20)
    x, _ = batch(2)
    op = SliceAverage(4, axis=-2)

    def run(seed, start_noise):
        return model.posterior_refine(x, op.forward(x), op.forward, steps=3, step_size=0.05, weight=10.0, noise=0.0,
                                      seed=seed, start=2, start_noise=start_noise).numpy()

    np.testing.assert_allclose(run(0, 0.0), run(1, 0.0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(run(0, 1.0), run(1, 1.0))


def test_pixel_ebm_train_step_fills_its_replay_buffer():
    model = PixelEBM((16, 16), base_channels=4, langevin_steps=3, buffer_size=8, reinit=0.0)
    model.build((None, 16, 16, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = model.buffer.numpy().copy()
    logs = model.train_on_batch(np.random.default_rng(0).random((4, 16, 16, 1), np.float32), np.zeros((4, 1)),
                                return_dict=True)
    assert np.isfinite(logs["loss"])
    after = model.buffer.numpy()
    changed = np.any(before != after, axis=(1, 2, 3))
    assert 1 <= changed.sum() <= 4  # the chains of this batch went back into the buffer
    assert after.min() >= 0 and after.max() <= 1
    images, chain = model.sample(3, seed=0, capture=True)
    assert images.shape == (3, 16, 16, 1) and chain.shape == (3, 3, 16, 16, 1)


def test_classifier_features_have_the_configured_width():
    model = FeatureClassifier((16, 16), features=12)
    model.build((None, 16, 16, 1))
    assert model.features(np.zeros((2, 16, 16, 1), np.float32)).shape == (2, 12)
    assert model(np.zeros((2, 16, 16, 1), np.float32)).shape == (2, 10)


def test_frechet_distance_of_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2.0 + np.array([1.0, 0.0, -2.0])
    # |mu|^2 = 5; Tr(I + 4I - 2 * 2I) = 3
    assert frechet_distance(a, b) == pytest.approx(8.0, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def _score_matching_model(**kw):
    keras.utils.set_random_seed(0)
    return tiny(ShapeLSDEBM, langevin_steps=2, segments=4, train_backbone=False, objective="score_matching",
                energy_hidden=32, energy_activation="silu", **kw)


def test_score_matching_of_the_zero_energy_on_standard_normal_latents_is_exact():
    """With E = 0 the marginal energy is |z|^2 / 2, exact for u0 ~ N(0, I) at every segment (z_t ~ N(0, I) too), and
    the loss |sqrt(v) z_t - eps|^2 then has the expectation d (1 - v_t) by hand."""
    model = _score_matching_model()
    for w in model.energy.weights:
        w.assign(np.zeros(w.shape, "float32"))
    rng = np.random.default_rng(0)
    n, d = 20000, 6
    u0, eps = (tf.constant(rng.standard_normal((n, d)), tf.float32) for _ in range(2))
    for t in range(4):
        loss = model.score_matching_loss(u0, tf.fill((n,), t), eps).numpy().mean()
        v = max(1 - float(model.alpha_bar[t]), 0.05 ** 2)
        assert loss == pytest.approx(d * (1 - v), rel=0.03), (t, loss, d * (1 - v))
    # the marginal energy is the chain energy's z_t-only part: the tether to z_{t+1} is all the rest
    z, z_next = (tf.constant(rng.standard_normal((3, d)), tf.float32) for _ in range(2))
    t = tf.constant([0, 1, 3])
    beta = tf.gather(model.beta, t)[:, None]
    y = tf.sqrt(1 - beta) * z
    tether = 0.5 * tf.reduce_sum((z_next - y) ** 2, -1) / beta[:, 0]
    np.testing.assert_allclose(model.marginal_energy(z, t), model.chain_energy(y, (z_next, t)) - tether, rtol=1e-5)


def test_score_matching_learns_what_the_standard_gaussian_misses():
    """Latents far from N(0, I) (u0 ~ N(1.5, 0.3^2) per dimension): a few hundred Adam steps take the held-out loss
    most of the way from the zero energy's to the optimum, which is known here: z_t is Gaussian with variance
    r + v (r = (1 - v) 0.3^2), and the best loss is d r / (r + v) per example."""
    model = _score_matching_model()
    rng = np.random.default_rng(1)

    def draw(n):
        u0 = 1.5 + 0.3 * rng.standard_normal((n, 6))
        return (tf.constant(u0, tf.float32), tf.constant(rng.integers(0, 4, n), tf.int32),
                tf.constant(rng.standard_normal((n, 6)), tf.float32))

    held_out = draw(4000)
    opt = keras.optimizers.Adam(3e-3)
    for _ in range(300):
        batch_ = draw(256)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.score_matching_loss(*batch_))
        grads = tape.gradient(loss, model.energy.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.energy.trainable_variables) if g is not None])
    fitted = float(tf.reduce_mean(model.score_matching_loss(*held_out)))
    for w in model.energy.weights:
        w.assign(np.zeros(w.shape, "float32"))
    zero = float(tf.reduce_mean(model.score_matching_loss(*held_out)))
    v = np.maximum(1 - model.alpha_bar.numpy()[:-1], 0.05 ** 2)[held_out[1].numpy()]
    r = (1 - v) * 0.3 ** 2
    best = float(np.mean(6 * r / (r + v)))
    assert best < fitted < zero - 0.8 * (zero - best), (best, fitted, zero)


def test_score_matching_train_step_draws_several_posterior_samples_and_trains_the_energy_only():
    import warnings

    model = _score_matching_model(score_samples=5, standardize=True)
    assert model.posterior_draws == 5 and tiny(ShapeLSDEBM, segments=4).posterior_draws == 1
    fixed = [v.numpy().copy() for v in model.backbone_weights()]
    energy = [v.numpy().copy() for v in model.energy.trainable_variables]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logs = model.train_on_batch(*batch(3), return_dict=True)
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]  # the output bias: zero gradient
    assert np.isfinite(logs["ebm_loss"]) and float(model.standardizer.count) == 1
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(fixed, model.backbone_weights()))
    changed = [not np.array_equal(a, v.numpy()) for a, v in zip(energy, model.energy.trainable_variables)]
    assert sum(changed) == len(changed) - 1  # all but the output bias, a constant of the energy
    with pytest.raises(ValueError, match="objective"):
        tiny(ShapeLSDEBM, segments=4, objective="maximum_likelihood")


def test_lsd_ebm_denoised_data_term_fits_the_slices_and_differs_from_the_noisy_one():
    """[Reconstruct] DataTerm = denoised decodes sqrt(alpha_bar_t) z_t in the data term: it lowers the data residual
    like the noisy term, but is not the same chain."""
    keras.utils.set_random_seed(0)
    model = tiny(ShapeLSDEBM, langevin_steps=2, segments=20)
    x, _ = batch(2)
    op = SliceAverage(4, axis=-2)
    y = op.forward(x)

    def run(term):
        return model.posterior_refine(x, y, op.forward, steps=20, step_size=0.05, weight=10.0, noise=0.0, start=3,
                                      data_term=term)

    def residual(z):
        return float(tf.reduce_sum((op.forward(tf.sigmoid(model.decode(z, x))) - y) ** 2))

    noisy, denoised = run("noisy"), run("denoised")
    assert residual(denoised) < residual(model.encode(x)[0])
    assert not np.allclose(noisy.numpy(), denoised.numpy())
    with pytest.raises(ValueError, match="data term"):
        run("clean")


def test_training_noise_is_fresh_at_every_step():
    """Two train steps on the same batch draw different posterior noise, segments and diffusion noise."""
    model = _score_matching_model(score_samples=3)
    u = tf.zeros((6, 6))
    first, second = model.prior_inputs(u), model.prior_inputs(u)
    assert not np.array_equal(first[2].numpy(), second[2].numpy())
    assert not np.array_equal(model._noise(u, 1).numpy(), model._noise(u, 1).numpy())
