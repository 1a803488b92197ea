#!/usr/bin/env python
"""Make the real data sets at native resolution with fixed, spatially disjoint splits (issue 16, item 5).

    pip download --no-deps stardist==0.9.2 -d /tmp/sd      # 2D: the DSB2018 nuclei image and its masks (CC0)
    pip download --no-deps nilearn==0.14.1 -d /tmp/nl      # 3D: the MNI ICBM152 2009a T1 and its GM / WM maps
    python scripts/make_real_data.py --stardist-wheel /tmp/sd/stardist-0.9.2-*.whl \\
        --nilearn-wheel /tmp/nl/nilearn-0.14.1-py3-none-any.whl

Writes (each set only when its source is given; nothing is downloaded here, the wheels are only read as zips):

    data/nuclei2d_regions/   the 512x512 fluorescence image cut into its four 256x256 quadrants (images/ uint8 grey
                             PNG, the source's own values; labels/ uint8 PNG nucleus instance ids 1..n per case)
    data/mni152_tissue/      the 197x233x189 1 mm T1 template cut into an inferior and a superior slab (images/ int16
                             NIfTI, the source's own values; labels/ uint8 NIfTI 0 = outside brain or CSF, 1 = grey
                             matter, 2 = white matter: the arg-max of the template's own GM / WM probability maps)

and in each folder `split.csv` (`name,split`, as ldseg_suite.data.splits.write_split) fixing train / val / test by
region, and `regions.csv` naming each case's source pixels or slices (the test checks they are disjoint).
Re-running gives byte-identical files: PNGs carry no time stamps, the NIfTI gzip streams have mtime 0 and no name.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

STARDIST_IMAGE = "stardist/data/images/img2d.tif"  # DSB2018 fluorescence image, 512x512 (uint16 holding 0..235)
STARDIST_MASK = "stardist/data/images/mask2d.tif"  # its nucleus instance mask (ids up to 183)
MNI = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"  # t1, gm, wm (uint8, 1 mm)

# 2D: the four quadrants of the 512x512 image; train on the top half, validate and test on the bottom half
QUADRANTS = {  # name: (row0, col0); each case is rows row0 .. row0+255, columns col0 .. col0+255
    "top_left": (0, 0), "top_right": (0, 256), "bottom_left": (256, 0), "bottom_right": (256, 256)}
QUADRANT_SPLIT = {"top_left": "train", "top_right": "train", "bottom_left": "val", "bottom_right": "test"}
QUADRANT = 256

# 3D: the brain's extent along inferior -> superior is cut at TRAIN_SHARE; the superior slab keeps TOP_MARGIN
# empty slices above the vertex, the inferior one starts at the grid's first slice (the template cuts the
# cerebellum there)
TRAIN_SHARE = 0.6
TOP_MARGIN = 4
SPLIT_COLUMNS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------- common
def read_member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        raise SystemExit(f"{wheel}: cannot read {member} ({exc.__class__.__name__}); expected the wheel named in "
                         "this script's docstring") from None


def write_split(folder: Path, split: dict[str, str]) -> None:
    """``name,split`` rows (train, then val, then test), the format of ldseg_suite.data.splits.write_split."""
    with open(folder / "split.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "split"])
        for part in SPLIT_COLUMNS:
            for name in sorted(n for n, p in split.items() if p == part):
                w.writerow([name, part])


def write_rows(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


# ---------------------------------------------------------------------------------------------- 2D nuclei
def make_nuclei(wheel: Path, out: Path) -> None:
    import imageio.v3 as iio
    import tifffile
    from skimage.segmentation import relabel_sequential

    image = tifffile.imread(io.BytesIO(read_member(wheel, STARDIST_IMAGE)))
    mask = tifffile.imread(io.BytesIO(read_member(wheel, STARDIST_MASK)))
    if image.shape != (512, 512) or mask.shape != image.shape or image.max() > 255 or image.min() < 0:
        raise SystemExit(f"{wheel}: expected a 512x512 image with values 0..255 and a mask of the same shape, got "
                         f"{image.shape} (values {image.min()}..{image.max()}) and {mask.shape}")
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (r, c) in QUADRANTS.items():
        crop = mask[r:r + QUADRANT, c:c + QUADRANT]
        ids = relabel_sequential(crop.astype(np.int64))[0]  # ids 1..n in the order of the source ids
        if ids.max() > 255:
            raise SystemExit(f"{name}: {ids.max()} nuclei do not fit an 8-bit label image")
        iio.imwrite(out / "images" / f"{name}.png", image[r:r + QUADRANT, c:c + QUADRANT].astype(np.uint8),
                    extension=".png")
        iio.imwrite(out / "labels" / f"{name}.png", ids.astype(np.uint8), extension=".png")
        rows.append([name, QUADRANT_SPLIT[name], r, r + QUADRANT, c, c + QUADRANT, int(ids.max()),
                     f"{(ids > 0).mean():.4f}"])
        print(f"{out}/{name}: rows {r}..{r + QUADRANT - 1}, columns {c}..{c + QUADRANT - 1}, {ids.max()} nuclei, "
              f"foreground {(ids > 0).mean():.3f} -> {QUADRANT_SPLIT[name]}")
    write_split(out, QUADRANT_SPLIT)
    write_rows(out / "regions.csv", ["name", "split", "row_start", "row_stop", "col_start", "col_stop", "nuclei",
                                     "foreground"], rows)


# ---------------------------------------------------------------------------------------------- 3D tissue
def save_nifti(path: Path, img) -> None:
    """The NIfTI as gzip with mtime 0 and no file name, so a re-run is byte-identical."""
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0))


def tissue_labels(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """uint8 0..255 GM / WM probabilities -> arg-max of (rest, GM, WM), rest = 255 - GM - WM (ties: lower class)."""
    gm, wm = gm.astype(np.int16), wm.astype(np.int16)
    rest = 255 - gm - wm
    if rest.min() < 0:
        raise SystemExit("GM + WM probability exceeds 1 somewhere: not the nilearn maps this script expects")
    return np.argmax(np.stack([rest, gm, wm]), axis=0).astype(np.uint8)


def make_tissue(wheel: Path, out: Path) -> None:
    import nibabel as nib

    imgs = {k: nib.Nifti1Image.from_bytes(gzip.decompress(read_member(wheel, MNI.format(k))))
            for k in ("t1", "gm", "wm")}
    t1 = imgs["t1"]
    if any(v.shape != t1.shape or not np.allclose(v.affine, t1.affine) for v in imgs.values()):
        raise SystemExit(f"{wheel}: the MNI T1, GM and WM files are not on one grid")
    if nib.aff2axcodes(t1.affine) != ("R", "A", "S"):
        raise SystemExit(f"{wheel}: expected the MNI template in RAS+ voxel order, got {nib.aff2axcodes(t1.affine)}")
    image = np.asarray(t1.dataobj).astype(np.int16)
    label = tissue_labels(np.asarray(imgs["gm"].dataobj), np.asarray(imgs["wm"].dataobj))
    zs = np.flatnonzero((image > 0).any(axis=(0, 1)))
    z_lo, z_hi = int(zs[0]), int(zs[-1]) + 1  # the brain's slices (0 .. 154: the grid starts at the cerebellum)
    cut = z_lo + int(round(TRAIN_SHARE * (z_hi - z_lo)))
    top = min(image.shape[2], z_hi + TOP_MARGIN)
    if label[..., top:].any() or label[..., :z_lo].any():
        raise SystemExit("labels outside the kept slices")
    slabs = {"mni152_inferior": (z_lo, cut, "train"), "mni152_superior": (cut, top, "test")}
    for sub in ("images", "labels"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (k0, k1, part) in slabs.items():
        affine = t1.affine.copy()
        affine[:3, 3] = nib.affines.apply_affine(t1.affine, [0, 0, k0])  # the slab's first voxel
        for sub, arr, dtype, descrip in (
                ("images", image, np.int16, "MNI ICBM152 2009a sym T1 (nilearn 0.14.1); MNI notice: NOTICE.md"),
                ("labels", label, np.uint8, "0 rest 1 GM 2 WM: argmax MNI 2009a GM/WM maps; NOTICE.md")):
            nii = nib.Nifti1Image(np.ascontiguousarray(arr[..., k0:k1], dtype=dtype), affine)
            nii.header.set_qform(affine, code=4)  # 4 = MNI152 space (the source has sform code 2, no qform)
            nii.header.set_sform(affine, code=4)
            nii.header.set_xyzt_units("mm")
            nii.header["descrip"] = descrip.encode()
            save_nifti(out / sub / f"{name}.nii.gz", nii)
        counts = np.bincount(label[..., k0:k1].ravel(), minlength=3)
        z_mm = (affine[2, 3], affine[2, 3] + (k1 - k0 - 1) * affine[2, 2])
        rows.append([name, part, k0, k1, f"{z_mm[0]:.1f}", f"{z_mm[1]:.1f}", *counts.tolist()])
        print(f"{out}/{name}: source slices {k0}..{k1 - 1} (z = {z_mm[0]:.0f} .. {z_mm[1]:.0f} mm), shape "
              f"{image[..., k0:k1].shape}, voxels per class {counts.tolist()} -> {part}")
    write_split(out, {n: s[2] for n, s in slabs.items()})
    write_rows(out / "regions.csv", ["name", "split", "slice_start", "slice_stop", "z_first_mm", "z_last_mm",
                                     "voxels_rest", "voxels_gm", "voxels_wm"], rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stardist-wheel", type=Path, help="stardist-0.9.2-*.whl -> <root>/nuclei2d_regions")
    ap.add_argument("--nilearn-wheel", type=Path, help="nilearn-0.14.1-py3-none-any.whl -> <root>/mni152_tissue")
    ap.add_argument("--root", type=Path, default=Path("data"))
    args = ap.parse_args(argv)
    if not (args.stardist_wheel or args.nilearn_wheel):
        ap.error("give --stardist-wheel and/or --nilearn-wheel")
    if args.stardist_wheel:
        make_nuclei(args.stardist_wheel, args.root / "nuclei2d_regions")
    if args.nilearn_wheel:
        make_tissue(args.nilearn_wheel, args.root / "mni152_tissue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
