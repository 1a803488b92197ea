"""The shipped data/ sets: the names, counts and shapes the configs and the rest of the team rely on."""
from pathlib import Path

import numpy as np
import pytest

from ldseg_suite.data import layout

DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.parametrize("folder, count, first, kind, classes, binarize, image_shape", [
    ("glas", 80, "testA_1", "2d", 2, True, (128, 128, 3)),
    ("echo", 16, "echo_00", "2d+t", 3, False, (64, 64, 16, 1)),
    ("knee", 16, "knee_00", "3d", 3, False, (64, 64, 32, 1)),
])
def test_shipped_set(folder, count, first, kind, classes, binarize, image_shape):
    cases = layout.find_cases(DATA / folder)
    assert len(cases) == count and cases[0].name == first and all(c.label is not None for c in cases)
    case = layout.load_case(cases[0], kind, classes, binarize)
    assert case.image.shape == image_shape and case.label.shape == image_shape[:-1]
    assert np.unique(case.label).tolist() == list(range(classes))


def test_shipped_weights_fit_the_size_budget_and_every_config_names_an_existing_file():
    """Each weights file under 8 MiB, weights/ under 60 MB; every cfg's [Output] Weights (and Backbone,
    FID classifier) exists."""
    import configparser

    root = DATA.parent
    files = [p for p in (root / "weights").rglob("*") if p.is_file()]
    assert files and all(p.stat().st_size < 8 * 2 ** 20 for p in files)
    assert sum(p.stat().st_size for p in files) < 60e6
    for cfg in (root / "cfg").glob("*.ini"):
        parser = configparser.ConfigParser()
        parser.read(cfg)
        named = [parser.get(sec, key, fallback="") for sec, key in
                 (("Output", "Weights"), ("Prior", "Backbone"), ("FID", "Classifier"))]
        for path in filter(None, named):
            assert (root / path).is_file(), f"{cfg.name} names {path}"
