import imageio.v3 as iio
import pytest

from ldseg_suite.data import synthetic

TINY = """
[Run]
Method = ldseg
Seed = 0
[Data]
Root = {root}
Layout = glas
Size = 16, 16
Channels = 3
Classes = 2
Binarize = true
Split = 0.5, 0.17, 0.33
[Model]
LatentChannels = 2
ImageLatentChannels = 4
Downsample = 2
BaseChannels = 8
ChannelMult = 1, 2
[NoiseScheduler]
Timesteps = 50
[Sampler]
Sampling_Steps = 3
[Training]
Epochs = 1
BatchSize = 2
[Output]
Gifs = 0
"""


def write_glas(root, n=6, size=24, seed=1):
    root.mkdir(parents=True, exist_ok=True)
    for k, (rgb, lab) in enumerate(synthetic.make_glands(n, size, seed=seed)):
        iio.imwrite(root / f"train_{k + 1}.bmp", rgb)
        iio.imwrite(root / f"train_{k + 1}_anno.bmp", lab)
    return root


@pytest.fixture
def tiny(tmp_path):
    """(config path, data root) of a tiny GlaS-named data set."""
    root = write_glas(tmp_path / "data")
    cfg = tmp_path / "tiny.ini"
    cfg.write_text(TINY.format(root=root))
    return cfg, root
