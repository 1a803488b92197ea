"""The real data sets at native resolution (scripts/make_real_data.py): sizes, label ranges, the loader settings
of data/README.md, and fixed splits whose train, val and test cases share no source pixel or slice."""
import csv
from itertools import combinations
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest

from ldseg_suite.data import layout, splits

DATA = Path(__file__).resolve().parents[2] / "data"
NUCLEI, TISSUE = DATA / "nuclei2d_regions", DATA / "mni152_tissue"
NUCLEI_CASES = {"top_left": "train", "top_right": "train", "bottom_left": "val", "bottom_right": "test"}
TISSUE_CASES = {"mni152_inferior": "train", "mni152_superior": "test"}


def regions(folder):
    with open(folder / "regions.csv", newline="") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("folder, cases", [(NUCLEI, NUCLEI_CASES), (TISSUE, TISSUE_CASES)])
def test_split_csv_names_every_case_once(folder, cases):
    found = [c.name for c in layout.find_cases(folder, "folders")]
    assert sorted(found) == sorted(cases)
    with open(folder / "split.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "split"]
    names = [r[0] for r in rows[1:]]
    assert len(names) == len(set(names)) == len(found)
    split = splits.read_split(folder / "split.csv")
    assert {n: part for part, ns in split.items() for n in ns} == cases
    assert split["train"] and split["test"]
    assert {n: r["split"] for n, r in regions(folder).items()} == cases


def test_nuclei_cases_are_disjoint_quadrants_of_one_image():
    boxes = {}
    for name, r in regions(NUCLEI).items():
        r0, r1, c0, c1 = (int(r[k]) for k in ("row_start", "row_stop", "col_start", "col_stop"))
        image = iio.imread(NUCLEI / "images" / f"{name}.png")
        label = iio.imread(NUCLEI / "labels" / f"{name}.png")
        assert image.shape == label.shape == (r1 - r0, c1 - c0) and min(image.shape) >= 256
        assert image.dtype == label.dtype == np.uint8
        assert 0 <= r0 < r1 <= 512 and 0 <= c0 < c1 <= 512
        assert image.std() > 10 and image.max() > 100  # a real fluorescence image, not a blank tile
        ids = np.unique(label)
        assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))  # instance ids 1..n, no gaps
        assert len(ids) - 1 == int(r["nuclei"]) and 20 <= len(ids) - 1 <= 60
        fg = label > 0
        assert 0.1 < fg.mean() < 0.35 and image[fg].mean() > image[~fg].mean() + 30  # nuclei are bright
        boxes[name] = (r0, r1, c0, c1)
    assert sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes.values()) == 512 * 512  # they tile the image
    for (a, (ar0, ar1, ac0, ac1)), (b, (br0, br1, bc0, bc1)) in combinations(boxes.items(), 2):
        assert ar1 <= br0 or br1 <= ar0 or ac1 <= bc0 or bc1 <= ac0, f"{a} and {b} overlap"


def test_tissue_slabs_are_disjoint_real_size_and_labelled():
    z_ranges = {}
    for name, r in regions(TISSUE).items():
        img = nib.load(TISSUE / "images" / f"{name}.nii.gz")
        lab = nib.load(TISSUE / "labels" / f"{name}.nii.gz")
        x, y = np.asarray(img.dataobj), np.asarray(lab.dataobj)
        assert x.dtype == np.int16 and y.dtype == np.uint8 and x.shape == y.shape
        assert x.size >= 128 ** 3 and min(x.shape[:2]) >= 128 and x.shape[2] == int(r["slice_stop"]) - int(
            r["slice_start"])
        assert np.allclose(img.affine, lab.affine) and nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert np.allclose(np.abs(np.diag(img.affine)[:3]), 1.0)  # native 1 mm
        assert set(np.unique(y)) == {0, 1, 2} and not (y[x == 0] > 0).any()
        assert 0 <= x.min() and x.max() <= 255
        # T1 contrast: white matter brighter than grey matter, grey matter brighter than CSF / outside
        wm, gm, rest = (x[y == c].mean() for c in (2, 1, 0))
        assert wm > gm + 20 and gm > rest + 100
        assert (TISSUE / "images" / f"{name}.nii.gz").stat().st_size < 3e6
        z = img.affine[2, 3] + img.affine[2, 2] * np.array([0, x.shape[2] - 1])
        assert np.allclose(z, [float(r["z_first_mm"]), float(r["z_last_mm"])], atol=0.05)
        z_ranges[name] = (z.min(), z.max())
    train_top, test_bottom = z_ranges["mni152_inferior"][1], z_ranges["mni152_superior"][0]
    assert test_bottom - train_top == pytest.approx(1.0)  # adjacent 1 mm slabs, no shared slice


@pytest.mark.parametrize("folder, kind, classes, binarize, top", [(NUCLEI, "2d", 2, True, 1),
                                                                  (TISSUE, "3d", 3, False, 2)])
def test_loader_settings_of_the_readme(folder, kind, classes, binarize, top):
    for paths in layout.find_cases(folder, "auto"):
        case = layout.load_case(paths, kind, classes, binarize)
        assert case.image.shape[-1] == 1 and case.label.shape == case.image.shape[:-1]
        assert case.label.min() == 0 and case.label.max() == top
