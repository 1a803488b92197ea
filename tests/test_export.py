"""Exported weights are gzip-compressed HDF5 and load back bit for bit."""
import h5py
import numpy as np

from ldseg_suite import training
from ldseg_suite.models.ddim import DDIM


def test_exported_weights_are_compressed_and_load_exactly(tmp_path):
    model = DDIM(base_channels=4, channel_mult=(1, 2), timesteps=10)
    model.build((None, 8, 8, 1))
    path = training.export_weights(model, tmp_path / "m.weights.h5")
    filters = []
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: filters.append(obj.compression) if isinstance(obj, h5py.Dataset)
                     and obj.size > 64 else None)
    assert filters and set(filters) == {"gzip"}
    other = DDIM(base_channels=4, channel_mult=(1, 2), timesteps=10)
    other.build((None, 8, 8, 1))
    training.load_weights(other, path, "test")
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
    assert not list(tmp_path.glob("*tmp*"))


def test_ema_warning_only_when_the_average_still_holds_the_initialisation():
    assert training.ema_warning(0.999, 700) is not None and "50 %" in training.ema_warning(0.999, 700)
    assert training.ema_warning(0.999, 3072) is None  # 0.999^3072 = 4.6 %
    assert training.ema_warning(0.0, 10) is None
    assert training.ema_warning(0.9, 100) is None
