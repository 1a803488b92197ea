"""Small helpers for the data-layer tests (tiny files in tmp_path, no shipped data needed)."""
import imageio.v3 as iio
import numpy as np
import pytest


@pytest.fixture
def glas_folder(tmp_path):
    """A tiny GlaS-style folder: RGB images + instance-label *_anno.bmp (ids 0..3), and one image without label."""
    rng = np.random.default_rng(0)
    for name in ("train_1", "train_2", "train_10", "testA_3"):
        iio.imwrite(tmp_path / f"{name}.bmp", rng.integers(0, 255, (8, 10, 3), dtype=np.uint8))
        lab = np.zeros((8, 10), np.uint8)
        lab[1:4, 1:4], lab[5:7, 5:9] = 1, 3
        iio.imwrite(tmp_path / f"{name}_anno.bmp", lab)
    iio.imwrite(tmp_path / "testA_4.bmp", rng.integers(0, 255, (8, 10, 3), dtype=np.uint8))
    return tmp_path
