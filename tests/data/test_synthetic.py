"""Demo-data generators: deterministic, the promised shapes / labels, and write_demo_sets loads back."""
import numpy as np

from ldseg_suite.data import layout, synthetic


def test_glands_are_deterministic_and_glas_like():
    a, b = synthetic.make_glands(3, 64, seed=3), synthetic.make_glands(3, 64, seed=3)
    for (ra, la), (rb, lb) in zip(a, b):
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a[0][0], synthetic.make_glands(1, 64, seed=4)[0][0])
    rgb, lab = a[0]
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and lab.shape == (64, 64) and lab.dtype == np.uint8
    for rgb, lab in synthetic.make_glands(4, 128, seed=0):
        n = int(lab.max())
        assert 2 <= n <= 6 and np.unique(lab).tolist() == list(range(n + 1))  # instance ids 1..n
        fg, bg = rgb[lab > 0].astype(float), rgb[lab == 0].astype(float)
        assert 0.05 < (lab > 0).mean() < 0.7
        assert fg.std() > 20 and bg.std() > 5  # textured: rim + lumen inside, stroma outside
        assert bg[:, 0].mean() > bg[:, 1].mean()  # pink stroma: more red than green


def test_echo_is_deterministic_and_beats():
    (c1, l1, sp), = synthetic.make_echo(1, 32, 8, seed=0)
    (c2, l2, _), = synthetic.make_echo(1, 32, 8, seed=0)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    assert c1.shape == l1.shape == (32, 32, 8) and c1.dtype == np.float32 and sp == (0.5, 0.5, 1.0)
    assert np.unique(l1).tolist() == [0, 1, 2]
    cavity = (l1 == 1).sum(axis=(0, 1))
    assert cavity.max() > 1.3 * cavity.min()  # the LV contracts and relaxes over the cycle
    assert c1[l1 == 1].mean() < c1[l1 == 0].mean() < c1[l1 == 2].mean()  # dark blood pool, bright myocardium


def test_knee_is_deterministic_with_bone_and_cartilage():
    (v1, l1, sp), = synthetic.make_knee(1, (32, 32, 16), seed=0)
    (v2, _, _), = synthetic.make_knee(1, (32, 32, 16), seed=0)
    np.testing.assert_array_equal(v1, v2)
    assert v1.shape == l1.shape == (32, 32, 16) and v1.dtype == np.float32 and sp == (0.6, 0.6, 1.2)
    assert np.unique(l1).tolist() == [0, 1, 2]
    assert (l1 == 2).sum() < (l1 == 1).sum()  # thin cartilage on larger bones
    assert v1[l1 == 2].mean() > v1[l1 == 1].mean() > v1[l1 == 0].mean()


def test_write_demo_sets_writes_loadable_sets(tmp_path):
    synthetic.write_demo_sets(tmp_path, seed=0, glas=(2, 1), echo=1, knee=1)
    glas = layout.find_cases(tmp_path / "glas")
    assert [c.name for c in glas] == ["testA_1", "train_1", "train_2"]
    g = layout.load_case(glas[1], "2d", classes=2, binarize=True)
    assert g.image.shape == (128, 128, 3) and g.label.max() == 1
    (echo,) = layout.find_cases(tmp_path / "echo")
    e = layout.load_case(echo, "2d+t", classes=3)
    assert echo.name == "echo_00" and e.image.shape == (64, 64, 16, 1) and e.label.max() == 2
    assert e.geometry.spacing == (0.5, 0.5, 1.0)
    (knee,) = layout.find_cases(tmp_path / "knee")
    k = layout.load_case(knee, "3d", classes=3)
    assert knee.name == "knee_00" and k.image.shape == (64, 64, 32, 1)
    np.testing.assert_allclose(k.geometry.spacing, (0.6, 0.6, 1.2), rtol=1e-6)
    np.testing.assert_array_equal(k.label, synthetic.make_knee(1, seed=0)[0][1])
