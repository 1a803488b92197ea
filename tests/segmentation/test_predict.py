"""--mode predict on new scans: a folder with corrupt files (shipped GlaS weights), resume, and NIfTI geometry."""
import os

import imageio.v3 as iio
import numpy as np
import pandas as pd

from ldseg_suite import cli
from ldseg_suite.data import synthetic


def test_predict_folder_with_corrupt_files_reports_them_and_resumes(tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sizes = {}
    for k, (rgb, _) in enumerate(synthetic.make_glands(8, 48, seed=7)):
        h, w = 48 + 4 * (k % 3), 40 + 8 * (k % 2)  # images of several sizes
        rgb = np.resize(rgb, (h, w, 3))
        iio.imwrite(inputs / f"scan_{k:02d}.png", rgb)
        sizes[f"scan_{k:02d}"] = (h, w)
    (inputs / "broken_a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    (inputs / "broken_b.png").write_text("hello")
    out = tmp_path / "o"
    args = ["--cfg", "cfg/glas.ini", "--mode", "predict", "--input", str(inputs), "--out", str(out)]
    assert cli.main(args) == 3
    preds = sorted(p.stem for p in (out / "predictions").glob("*.png"))
    assert preds == sorted(sizes)
    for name, shape in sizes.items():
        pred = iio.imread(out / "predictions" / f"{name}.png")
        assert pred.shape == shape and set(np.unique(pred)) <= {0, 1}
    table = pd.read_csv(out / "predict.csv")
    assert len(table) == 10
    failed = table[table.status == "failed"]
    assert sorted(failed.case) == ["broken_a", "broken_b"]
    assert all("broken_" in m and "cannot read image" in m for m in failed.message)
    assert "broken_a" in capsys.readouterr().err

    stamp = os.path.getmtime(out / "predictions" / "scan_00.png")
    assert cli.main(args) == 3  # the two bad files still fail; the 8 are skipped, not recomputed
    assert os.path.getmtime(out / "predictions" / "scan_00.png") == stamp
    again = pd.read_csv(out / "predict.csv")
    assert (again[again.status == "ok"].message == "already predicted").sum() == 8
