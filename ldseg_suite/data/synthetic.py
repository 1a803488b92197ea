"""Deterministic demo-data generators (numpy + scipy only; the same seed gives the same arrays).

- ``make_glands``: GlaS-like H&E tiles with gland instance labels.
- ``make_echo``: 2D+t beating-heart cine with LV cavity (1) and myocardium (2) labels.
- ``make_knee``: 3D knee-like MR volumes with bone (1) and cartilage (2) labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage


def _smooth_noise(rng, shape, sigma):
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (field.std() + 1e-8)


def _blob(rng, shape, centre, radius, wobble=0.25, harmonics=4):
    """A star-shaped blob: an ellipse whose radius is modulated by a few random harmonics."""
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    theta = np.arctan2(dy, dx)
    aspect = rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, np.pi)
    r = np.sqrt((dx * np.cos(rot) + dy * np.sin(rot)) ** 2 + ((-dx * np.sin(rot) + dy * np.cos(rot)) / aspect) ** 2)
    mod = np.ones_like(theta)
    for k in range(2, 2 + harmonics):
        mod += wobble / k * rng.uniform(-1, 1) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return r <= radius * mod


def make_glands(n: int, size: int = 128, seed: int = 0):
    """[(rgb uint8 (size, size, 3), instance labels uint8 (size, size))] GlaS-like tiles."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        shape = (size, size)
        labels = np.zeros(shape, np.uint8)
        glands = 0
        for _ in range(60):
            # the stopping count is redrawn on every attempt (2..6), so most tiles hold 2-3 glands and a few
            # up to 5; kept as is because the shipped data/glas and the weights trained on it come from it
            if glands >= rng.integers(2, 7):
                break
            radius = rng.uniform(0.1, 0.24) * size
            centre = rng.uniform(radius * 0.6, size - radius * 0.6, 2)
            blob = _blob(rng, shape, centre, radius)
            if (ndimage.binary_dilation(blob, iterations=3) & (labels > 0)).any():
                continue
            glands += 1
            labels[blob] = glands
        fg = labels > 0
        rim_width = rng.integers(4, 9)
        lumen = ndimage.binary_erosion(fg, iterations=int(rim_width))
        rim = fg & ~lumen
        # stain colours vary per tile
        jitter = rng.uniform(-18, 18, 3)
        stroma_c = np.array([225, 160, 195]) + jitter
        rim_c = np.array([150, 80, 170]) + jitter
        lumen_c = np.array([240, 225, 238]) + jitter / 2
        texture = _smooth_noise(rng, shape, 2.0)[..., None]
        img = np.where(rim[..., None], rim_c, np.where(lumen[..., None], lumen_c, stroma_c)).astype(np.float32)
        img += 14 * texture
        # fibres in the stroma, dense nuclei along the rim, sparse nuclei in the stroma
        fibres = _smooth_noise(rng, shape, (0.7, 4.0))
        img += (~fg)[..., None] * 10 * fibres[..., None]
        nuclei = np.zeros(shape, np.float32)
        ys, xs = np.nonzero(rim)
        pick = rng.random(len(ys)) < 0.12
        nuclei[ys[pick], xs[pick]] = 1
        ys, xs = np.nonzero(~fg)
        pick = rng.random(len(ys)) < 0.006
        nuclei[ys[pick], xs[pick]] = 1
        nuclei = np.clip(ndimage.gaussian_filter(nuclei, 1.0) * 6, 0, 1)[..., None]
        img = img * (1 - 0.55 * nuclei) + nuclei * np.array([60, 20, 90]) * 0.55
        img = ndimage.gaussian_filter(img, (0.8, 0.8, 0))
        img += rng.normal(0, 6, img.shape)
        out.append((np.clip(img, 0, 255).astype(np.uint8), labels))
    return out


def make_echo(n: int, size: int = 64, frames: int = 16, seed: int = 0):
    """[(cine float32 (size, size, frames), labels uint8, spacing)] beating-heart 2D+t sequences."""
    out = []
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng([seed, 1000 + i])
        cy, cx = rng.uniform(0.42, 0.58, 2) * size
        r0 = rng.uniform(0.16, 0.22) * size
        wall = rng.uniform(0.06, 0.09) * size
        aspect = rng.uniform(0.75, 1.0)
        squeeze = rng.uniform(0.2, 0.35)
        phase = rng.uniform(0, 2 * np.pi)
        cine = np.zeros((size, size, frames), np.float32)
        labels = np.zeros((size, size, frames), np.uint8)
        tissue = 0.3 + 0.05 * _smooth_noise(rng, (size, size), 6)
        for t in range(frames):
            c = 0.5 * (1 - np.cos(2 * np.pi * t / frames + phase))  # 0 = diastole, 1 = systole
            r_in = r0 * (1 - squeeze * c)
            r_out = np.sqrt(r_in ** 2 + (r0 + wall) ** 2 - r0 ** 2)  # myocardial area is conserved
            d = np.sqrt((yy - cy) ** 2 + ((xx - cx) * aspect) ** 2)
            lab = np.where(d <= r_in, 1, np.where(d <= r_out, 2, 0)).astype(np.uint8)
            base = np.where(lab == 1, 0.08, np.where(lab == 2, 0.7, tissue))
            speckle = rng.rayleigh(0.6, (size, size)).astype(np.float32)
            frame = ndimage.gaussian_filter(base * speckle, 0.7)
            cine[..., t] = frame
            labels[..., t] = lab
        out.append((cine, labels, (0.5, 0.5, 1.0)))
    return out


def make_knee(n: int, size=(64, 64, 32), seed: int = 0):
    """[(volume float32 (H, W, D), labels uint8, spacing)] knee-like MR: femur/tibia (1), cartilage (2)."""
    out = []
    yy, xx = np.mgrid[:size[0], :size[1]].astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng([seed, 2000 + i])
        h, w, d = size
        labels = np.zeros(size, np.uint8)
        gap = rng.uniform(0.05, 0.08) * h          # joint space between the bones (rows)
        mid = rng.uniform(0.45, 0.55) * h
        cart = rng.uniform(3.0, 4.5)               # cartilage thickness (rows)
        cx = rng.uniform(0.45, 0.55) * w
        half_w = rng.uniform(0.28, 0.36) * w
        depth_c, depth_r = d / 2, rng.uniform(0.35, 0.45) * d
        for k in range(d):
            dz = (k - depth_c) / depth_r
            if abs(dz) >= 1:
                continue
            width = half_w * np.sqrt(1 - dz ** 2)
            dx = (xx - cx) / width
            inside = np.abs(dx) < 1
            # femur: condyle surface bulges down; tibia: plateau slightly concave
            femur_edge = mid - gap / 2 - 0.06 * h * dx ** 2
            tibia_edge = mid + gap / 2 + 0.02 * h * dx ** 2
            femur = inside & (yy <= femur_edge) & (yy > femur_edge - 0.42 * h)
            tibia = inside & (yy >= tibia_edge) & (yy < tibia_edge + 0.42 * h)
            fem_cart = femur & (yy > femur_edge - cart)
            tib_cart = tibia & (yy < tibia_edge + cart)
            sl = np.zeros((h, w), np.uint8)
            sl[femur | tibia] = 1
            sl[fem_cart | tib_cart] = 2
            labels[..., k] = sl
        limb = ndimage.binary_dilation(labels > 0, iterations=5)
        vol = np.where(labels == 1, 0.45, np.where(labels == 2, 0.85, np.where(limb, 0.28, 0.02))).astype(np.float32)
        vol += 0.05 * _smooth_noise(rng, size, 2.0) * (labels == 1)
        bias = 1 + 0.15 * _smooth_noise(rng, size, 12.0)
        vol = ndimage.gaussian_filter(vol * bias, 0.6) + rng.normal(0, 0.04, size)
        out.append((vol.astype(np.float32), labels, (0.6, 0.6, 1.2)))
    return out


def _affine(spacing):
    return np.diag(list(spacing) + [1.0])


def write_demo_sets(root="data", seed: int = 0, glas=(60, 20), echo=16, knee=16) -> None:
    """Write data/glas (GlaS naming), data/echo and data/knee (images/ + labels/ NIfTI)."""
    from ldseg_suite.data import readers

    root = Path(root)
    n_train, n_test = glas
    for k, (rgb, lab) in enumerate(make_glands(n_train + n_test, 128, seed)):
        name = f"train_{k + 1}" if k < n_train else f"testA_{k - n_train + 1}"
        _write_bmp(root / "glas" / f"{name}.bmp", rgb)
        _write_bmp(root / "glas" / f"{name}_anno.bmp", lab)
    for k, (cine, lab, sp) in enumerate(make_echo(echo, seed=seed)):
        readers.write_nifti(root / "echo" / "images" / f"echo_{k:02d}.nii.gz", cine, _affine(sp))
        readers.write_nifti(root / "echo" / "labels" / f"echo_{k:02d}.nii.gz", lab, _affine(sp))
    for k, (vol, lab, sp) in enumerate(make_knee(knee, seed=seed)):
        readers.write_nifti(root / "knee" / "images" / f"knee_{k:02d}.nii.gz", vol, _affine(sp))
        readers.write_nifti(root / "knee" / "labels" / f"knee_{k:02d}.nii.gz", lab, _affine(sp))


def _write_bmp(path: Path, array) -> None:
    import imageio.v3 as iio

    from ldseg_suite.data import readers

    readers._atomic(path, lambda p: iio.imwrite(p, np.asarray(array), extension=".bmp"))
