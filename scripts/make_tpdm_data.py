"""Make the small real 3D volumes for TPDM (two perpendicular 2D diffusion models) in data/tpdm/.

One deterministic command remakes every file from three downloaded packages (nothing is fetched here):

    (cd /tmp && apt-get download mricron-data invesalius-examples)
    pip download --no-deps nilearn==0.14.1 -d /tmp
    python scripts/make_tpdm_data.py --mricron-deb /tmp/mricron-data_*.deb \\
        --nilearn-wheel /tmp/nilearn-0.14.1-py3-none-any.whl --invesalius-deb /tmp/invesalius-examples_*.deb

Writes (float32 NIfTI, values in [0, 1], affine diag(spacing_mm, 1), axis 0 = left->right, axis 1 =
posterior->anterior, axis 2 = inferior->superior, i.e. RAS+ voxel order):

    colin27_t1.nii.gz      Colin27 T1 brain (mricron-data: templates/ch2.nii.gz inside the mask of ch2bet.nii.gz,
                           closed and hole-filled: ch2bet's own cut leaves streaks along the midline)
    mni152_t1.nii.gz       MNI ICBM152 2009a nonlinear symmetric T1 (nilearn wheel; that file is skull-stripped, 8-bit)
    head_ct_train.nii.gz   lower half of one head CT (invesalius-examples: Cranium.inv3), window [-1000, 1500] HU
    head_ct_test.nii.gz    upper half of the same CT; the halves come from disjoint source slices

`--size 128` writes the 128^3 versions into `<out>/128/` instead. The .deb files are read with Python's own
ar/tar readers (no dpkg, no root rights); the CT is an InVesalius project (a tar.gz of plists + a raw int16
matrix), so no DICOM reader is needed either. Only numpy, scipy and nibabel are used.

Re-running gives byte-identical files: the gzip stream is written with mtime 0 and no file name.
"""
from __future__ import annotations

import argparse
import gzip
import io
import plistlib
import sys
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

COLIN_MEMBER = "usr/share/mricron/templates/ch2.nii.gz"  # whole-head Colin27 T1, 1 mm
COLIN_BET_MEMBER = "usr/share/mricron/templates/ch2bet.nii.gz"  # the same voxels, brain-extracted (BET)
MNI_MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
CT_MEMBER = "usr/share/doc/invesalius-examples/examples/Cranium.inv3"
CT_WINDOW = (-1000.0, 1500.0)  # HU mapped linearly to [0, 1]
QUANT = 2.0 ** -10  # values are rounded to multiples of 1/1024 (exact in float32; the sources are 8-bit / integer HU)
MARGIN = 0.03  # empty border on each side of the longest extent, as a fraction of that extent


# ---------------------------------------------------------------------------------------------- package readers
def deb_member(deb: Path, member: str) -> bytes:
    """One file's bytes from a .deb (an `ar` archive holding data.tar.{xz,gz,bz2,zst}), without dpkg."""
    raw = Path(deb).read_bytes()
    if raw[:8] != b"!<arch>\n":
        raise SystemExit(f"{deb}: not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(raw):
        name = raw[pos:pos + 16].decode().strip().rstrip("/")
        size = int(raw[pos + 48:pos + 58].decode().strip())
        body = raw[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".zst"):
            import subprocess  # zstd is not in the standard library before Python 3.14: let dpkg-deb unpack it

            body = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
            mode = "r:"
        else:
            mode = {".xz": "r:xz", ".gz": "r:gz", ".bz2": "r:bz2"}.get(Path(name).suffix, "r:")
        with tarfile.open(fileobj=io.BytesIO(body), mode=mode) as tar:
            for cand in (f"./{member}", member):
                try:
                    return tar.extractfile(cand).read()
                except KeyError:
                    pass
        raise SystemExit(f"{deb}: no {member} inside")
    raise SystemExit(f"{deb}: no data.tar member")


def nifti_from_gz(data: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(data))


def load_inv3(data: bytes) -> nib.Nifti1Image:
    """An InVesalius 3 project (.inv3: tar.gz of main.plist + raw matrix.dat) -> NIfTI image in HU.

    matrix.dat is C-ordered (slice, row, column) int16. InVesalius reads the DICOM slices through VTK, whose y
    axis points up, so row 0 is the *posterior* edge (the head rest is there and the teeth at high rows);
    columns keep the DICOM direction (towards the patient's left); slices are sorted inferior -> superior
    (slice 0 cuts the upper teeth, the last ones reach the vertex). Hence the voxel axes (column, row, slice)
    point to L, A, S and the affine is diag(-sx, sy, sz).
    """
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        files = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        meta = plistlib.loads(tar.extractfile(files["main.plist"]).read())
        mat = meta["matrix"]
        raw = tar.extractfile(files[mat["filename"]]).read()
    if meta.get("modality") != "CT":
        raise SystemExit(f"inv3: modality {meta.get('modality')!r}, expected CT")
    arr = np.frombuffer(raw, dtype=np.dtype(mat["dtype"]).newbyteorder("<")).reshape(mat["shape"])
    sx, sy, sz = (float(s) for s in meta["spacing"])
    vol = np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(np.float32)  # (column, row, slice)
    return nib.Nifti1Image(vol, np.diag([-sx, sy, sz, 1.0]))


# ---------------------------------------------------------------------------------------------- geometry
def canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(img)
    return np.asarray(img.dataobj, dtype=np.float64), img.affine.copy()


def resample(data, affine, start_mm, spacing, shape, cval=0.0, mode="constant"):
    """Sample `data` (voxel->mm `affine`) on the grid start_mm + (i + 0.5) * spacing: cubic, anti-aliased.

    Where the output is coarser than the source, a Gaussian of sigma = (factor - 1) / 2 source voxels is applied
    first (scikit-image's anti-aliasing rule), so downsampling does not alias."""
    src = np.sqrt((affine[:3, :3] ** 2).sum(0))  # source voxel sizes (mm)
    sigma = np.maximum(0.0, (np.asarray(spacing) / src - 1.0) / 2.0)
    if sigma.any():
        data = ndimage.gaussian_filter(data, sigma, mode="nearest")
    out_aff = np.diag([*spacing, 1.0])
    out_aff[:3, 3] = np.asarray(start_mm) + 0.5 * np.asarray(spacing)
    m = np.linalg.inv(affine) @ out_aff
    return ndimage.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=tuple(shape), order=3,
                                    mode=mode, cval=cval)


def bbox_mm(mask, affine):
    """Physical [lo, hi] corners (mm) of a mask's voxel bounding box (voxel edges, not centres)."""
    idx = np.argwhere(mask)
    corners = np.array([idx.min(0) - 0.5, idx.max(0) + 0.5])
    pts = nib.affines.apply_affine(affine, corners)
    return pts.min(0), pts.max(0)


def cube_grid(lo, hi, size):
    """An isotropic cube around the box [lo, hi]: side = longest extent plus MARGIN on each side."""
    centre, side = (lo + hi) / 2.0, float((hi - lo).max()) * (1.0 + 2.0 * MARGIN)
    spacing = np.full(3, side / size)
    return centre - side / 2.0, spacing


def quantise(x):
    return (np.round(np.clip(x, 0.0, 1.0) / QUANT) * QUANT).astype(np.float32)


# ---------------------------------------------------------------------------------------------- volumes
def largest_component(mask):
    lab, n = ndimage.label(mask)
    return mask if n < 2 else lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)


def colin_brain(ch2: nib.Nifti1Image, ch2bet: nib.Nifti1Image) -> nib.Nifti1Image:
    """ch2 (whole head) inside ch2bet's brain mask after a closing (6 x 6-neighbour steps) and hole filling.

    ch2bet holds exactly ch2's voxel values where it is non-zero, but its extraction cut ragged holes into the
    interhemispheric fissure and left a few specks below the brain stem; the closing restores the midline CSF
    (dark, as in the MNI template) and keeping the largest component drops the specks."""
    if not np.allclose(ch2.affine, ch2bet.affine) or ch2.shape != ch2bet.shape:
        raise SystemExit("ch2.nii.gz and ch2bet.nii.gz are not on the same grid")
    head = np.asarray(ch2.dataobj, dtype=np.float32)
    mask = np.asarray(ch2bet.dataobj) > 0
    pad = 8
    mask = ndimage.binary_closing(np.pad(mask, pad), ndimage.generate_binary_structure(3, 1), iterations=6)
    mask = largest_component(ndimage.binary_fill_holes(mask[pad:-pad, pad:-pad, pad:-pad]))
    return nib.Nifti1Image(np.where(mask, head, 0.0).astype(np.float32), ch2.affine)


def make_brain(img, size):
    """A skull-stripped T1 -> (size,)*3 isotropic cube around the brain, scaled so its 99.9th percentile is 1."""
    data, aff = canonical(img)
    data = np.clip(data, 0.0, None)
    mask = largest_component(data > 0.05 * data.max())
    start, spacing = cube_grid(*bbox_mm(mask, aff), size)
    out = np.clip(resample(data, aff, start, spacing, (size,) * 3, 0.0), 0.0, None)
    scale = np.percentile(out[out > 0.05 * out.max()], 99.9)
    return quantise(out / scale), spacing


def head_mask(hu):
    """The patient: largest connected component above -400 HU, holes filled slice by slice, dilated 2 voxels.

    Everything outside it (head rest, table, the scanner's circular field of view) is set to air."""
    mask = largest_component(hu > -400)
    for k in range(mask.shape[2]):
        mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
    return ndimage.binary_dilation(mask, iterations=2)


def make_ct(img, size):
    """Two (size, size, size) halves of the head; each is resampled only from its own source slices."""
    hu, aff = canonical(img)
    mask = head_mask(hu)
    hu = np.where(mask, hu, -1000.0)
    lo, hi = bbox_mm(mask, aff)
    side = float(max(hi[0] - lo[0], hi[1] - lo[1])) * (1.0 + 2.0 * MARGIN)
    centre = (lo + hi) / 2.0
    ks = np.flatnonzero(mask.any(axis=(0, 1)))  # slices (axis 2, inferior -> superior) that hold the head
    k0, k1 = int(ks[0]), int(ks[-1]) + 1
    kmid = (k0 + k1) // 2
    halves = []
    for a, b in ((k0, kmid), (kmid, k1)):
        sub = hu[:, :, a:b]
        sub_aff = aff.copy()
        sub_aff[:3, 3] = nib.affines.apply_affine(aff, [0, 0, a])
        z_lo = nib.affines.apply_affine(sub_aff, [0, 0, -0.5])[2]
        z_len = (b - a) * abs(aff[2, 2])
        spacing = np.array([side / size, side / size, z_len / size])
        start = np.array([centre[0] - side / 2.0, centre[1] - side / 2.0, z_lo])
        out = resample_slab(sub, sub_aff, start, spacing, (size,) * 3)
        halves.append((quantise((out - CT_WINDOW[0]) / (CT_WINDOW[1] - CT_WINDOW[0])), spacing))
    info = dict(slices=(k0, kmid, k1), n_slices=hu.shape[2])
    return halves, info


def resample_slab(data, affine, start, spacing, shape):
    """`resample` of one slab, padded along z with copies of its own end slices (never the other half's)."""
    pad = 4
    data = np.pad(data, ((0, 0), (0, 0), (pad, pad)), mode="edge")
    aff = affine.copy()
    aff[:3, 3] = nib.affines.apply_affine(affine, [0, 0, -pad])
    return resample(data, aff, start, spacing, shape, mode="nearest")


# ---------------------------------------------------------------------------------------------- output
DESCRIP = {  # the NIfTI header's 80-byte description: source and where the licence notice is
    "colin27_t1": "Colin27 T1 (Debian mricron-data ch2); (C) MNI/McGill; see data/tpdm/NOTICE.md",
    "mni152_t1": "MNI ICBM152 2009a T1 (nilearn wheel); (C) MNI/McGill; see data/tpdm/NOTICE.md",
    "head_ct_train": "head CT (Debian invesalius-examples), GPL-2; see data/tpdm/NOTICE.md",
    "head_ct_test": "head CT (Debian invesalius-examples), GPL-2; see data/tpdm/NOTICE.md",
}


def save(path: Path, arr: np.ndarray, spacing) -> None:
    """float32 NIfTI, affine diag(spacing, 1) in both qform and sform, gzip with mtime 0 and no name."""
    affine = np.diag([*(float(s) for s in spacing), 1.0])
    img = nib.Nifti1Image(np.asarray(arr, np.float32), affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0
    img.header["descrip"] = DESCRIP[path.name.removesuffix(".nii.gz")].encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=9, mtime=0))
    print(f"{path}  {arr.shape}  spacing {np.round(spacing, 3).tolist()} mm  {path.stat().st_size / 1e6:.2f} MB  "
          f"mean {arr.mean():.3f} std {arr.std():.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mricron-deb", type=Path, required=True, help="mricron-data_*.deb (Colin27)")
    ap.add_argument("--nilearn-wheel", type=Path, required=True, help="nilearn-*.whl (MNI152 2009a template)")
    ap.add_argument("--invesalius-deb", type=Path, required=True, help="invesalius-examples_*.deb (head CT)")
    ap.add_argument("--out", type=Path, default=Path("data/tpdm"))
    ap.add_argument("--size", type=int, default=64, help="cube side in voxels (64, or 128 -> <out>/128/)")
    args = ap.parse_args(argv)
    out = args.out if args.size == 64 else args.out / str(args.size)

    colin = colin_brain(nifti_from_gz(deb_member(args.mricron_deb, COLIN_MEMBER)),
                        nifti_from_gz(deb_member(args.mricron_deb, COLIN_BET_MEMBER)))
    arr, sp = make_brain(colin, args.size)
    save(out / "colin27_t1.nii.gz", arr, sp)

    with zipfile.ZipFile(args.nilearn_wheel) as whl:
        mni = nifti_from_gz(whl.read(MNI_MEMBER))
    arr, sp = make_brain(mni, args.size)
    save(out / "mni152_t1.nii.gz", arr, sp)

    ct = load_inv3(deb_member(args.invesalius_deb, CT_MEMBER))
    ((train, sp_tr), (test, sp_te)), info = make_ct(ct, args.size)
    k0, kmid, k1 = info["slices"]
    print(f"CT: {info['n_slices']} source slices, head in {k0}..{k1 - 1}; train = source slices {k0}..{kmid - 1}, "
          f"test = {kmid}..{k1 - 1} (inferior -> superior)")
    save(out / "head_ct_train.nii.gz", train, sp_tr)
    save(out / "head_ct_test.nii.gz", test, sp_te)
    return 0


if __name__ == "__main__":
    sys.exit(main())
