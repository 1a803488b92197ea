"""LDSeg's clean-latent parameterisation: the sampler's noise estimate is consistent with the predicted latent."""
import keras
import numpy as np

from ldseg_suite.models.ldseg import LDSeg


def test_x0_prediction_gives_the_noise_whose_x0_estimate_is_the_network_output():
    keras.utils.set_random_seed(0)
    model = LDSeg(spatial_dims=2, in_channels=1, classes=2, latent_channels=2, image_latent_channels=4, downsample=2,
                  base_channels=8, channel_mult=(1, 2), attention=False, timesteps=50, prediction="x0")
    model.build((None, 16, 16, 1))
    rng = np.random.default_rng(0)
    z_t = rng.standard_normal((3, 8, 8, 2)).astype("float32")
    z_i = model.image_encoder(rng.random((3, 16, 16, 1)).astype("float32"))
    t = np.array([0, 25, 49], "int32")
    out = np.asarray(model._net(z_t, z_i, t))
    eps = np.asarray(model.denoise(z_t, z_i, t))
    ab = model.alphas_cumprod[t][:, None, None, None]
    np.testing.assert_allclose((z_t - np.sqrt(1 - ab) * eps) / np.sqrt(ab), out, atol=2e-4)
    assert model.get_config()["prediction"] == "x0"
