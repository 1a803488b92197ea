"""The Otsu baseline: thresholds of each case, bins mapped to classes on training cases only."""
import numpy as np

from ldseg_suite.baselines import Otsu


def _case(seed, dark_foreground=False, fg=0.1):
    rng = np.random.default_rng(seed)
    label = (rng.random((40, 40)) < fg).astype(np.int32)
    bright = label if not dark_foreground else 1 - label
    image = (0.2 + 0.6 * bright + 0.05 * rng.standard_normal((40, 40)))[..., None]
    return image, label


def test_small_foreground_is_found_whatever_its_polarity():
    for dark in (False, True):
        otsu = Otsu(2).fit(_case(s, dark) for s in range(3))
        image, label = _case(9, dark)
        pred = otsu(image)
        dice = 2 * np.sum((pred == 1) & (label == 1)) / (np.sum(pred == 1) + np.sum(label == 1))
        assert dice > 0.95


def test_three_classes_follow_intensity_order_learnt_on_training_cases():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (30, 30))
    levels = np.array([0.5, 0.1, 0.9])  # class 1 darkest, class 0 middle, class 2 brightest
    image = (levels[label] + 0.02 * rng.standard_normal(label.shape))[..., None]
    otsu = Otsu(3).fit([(image, label)])
    assert (otsu(image) == label).mean() > 0.99


def test_without_labelled_training_voxels_the_brighter_bin_is_foreground():
    image, label = _case(0)
    otsu = Otsu(2).fit([])
    assert list(otsu.mapping) == [0, 1]
    assert (otsu(image) == label).mean() > 0.95


def test_dice_rows_match_the_dice_of_score_rows():
    from types import SimpleNamespace

    from ldseg_suite.tasks import segmentation as seg

    rng = np.random.default_rng(1)
    for kind, shape in (("2d", (20, 20)), ("2d+t", (12, 12, 3)), ("3d", (10, 10, 6))):
        cfg = SimpleNamespace(Data=SimpleNamespace(Classes=3, Kind=kind))
        label = rng.integers(0, 3, shape)
        case = SimpleNamespace(name="c", label=label, geometry=SimpleNamespace(spacing=(1.0,) * len(shape)))
        pred = np.where(rng.random(shape) < 0.8, label, rng.integers(0, 3, shape))
        expected = [row["dice"] for row in seg.score_rows(cfg, case, pred)]
        np.testing.assert_allclose(seg.dice_rows(cfg, case, pred), expected)


def test_an_unreadable_training_case_is_skipped_not_fatal(tmp_path, capsys):
    from types import SimpleNamespace

    from ldseg_suite.baselines import otsu_for

    good = [_case(s, dark_foreground=True) for s in range(2)]

    class Reader:  # a CaseReader's paths / load, the second case corrupt
        paths = [SimpleNamespace(image=tmp_path / f"c{k}.png", label=tmp_path / f"c{k}_label.png") for k in range(3)]

        def load(self, p):
            if p.image.name == "c1.png":
                raise ValueError("truncated file")
            image, label = good[0 if p.image.name == "c0.png" else 1]
            return SimpleNamespace(image=image, label=label)

    otsu = otsu_for(Reader(), 2)
    assert list(otsu.mapping) == [1, 0]  # dark foreground learnt from the two readable cases
    err = capsys.readouterr().err
    assert "skipped" in err and "c1.png" in err and "truncated file" in err
