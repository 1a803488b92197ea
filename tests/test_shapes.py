"""Thick-slice shape reconstruction: the vertebra generator, the VAE, and the runner's metric table."""
import numpy as np
import pandas as pd

from ldseg_suite import cli
from ldseg_suite.data import readers, shapes


def test_vertebra_generator_is_deterministic_and_plausible():
    a, b = shapes.make_vertebrae(2, 32, seed=1), shapes.make_vertebrae(2, 32, seed=1)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])
    for m in a:
        assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
        assert 0.01 < m.mean() < 0.2  # a solid object, neither empty nor filling the box


def test_vae_train_and_infer_end_to_end(tmp_path):
    root = tmp_path / "vert"
    for k, m in enumerate(shapes.make_vertebrae(6, 16, seed=0)):
        readers.write_nifti(root / "images" / f"v{k}.nii.gz", m, np.eye(4))
    cfg = tmp_path / "vae.ini"
    cfg.write_text(f"""[Run]
Method = vae
[Data]
Root = {root}
Kind = 3d
Size = 16, 16, 16
Channels = 1
Normalize = none
Split = 0.5, 0.17, 0.33
[ThickSlice]
Factor = 4
[Model]
LatentDim = 8
BaseChannels = 4
Levels = 2
[Training]
Epochs = 2
BatchSize = 2
[Output]
Gifs = 1
""")
    out = str(tmp_path / "run")
    assert cli.main(["--cfg", str(cfg), "--mode", "train", "--out", out]) == 0
    assert cli.main(["--cfg", str(cfg), "--mode", "infer", "--out", out]) == 0
    table = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert set(table.method) == {"vae", "upsampling"}
    assert {"dice", "vs", "sen", "spec", "nmi", "kappa"} <= set(table.columns)
    assert table[["dice", "vs", "sen", "spec", "nmi", "kappa"]].notna().all().all()
    assert "| upsampling |" in (tmp_path / "run" / "summary.md").read_text()
    arr, geom = readers.read_nifti(next((tmp_path / "run" / "predictions").glob("*.nii.gz")))
    assert arr.shape == (16, 16, 16)
    assert list((tmp_path / "run" / "gifs").glob("*.gif"))
