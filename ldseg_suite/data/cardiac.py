"""Deterministic cardiac cine phantom (bSSFP-like SAX stacks + LAX planes) for sparse-slice 3D reconstruction.

A case is a short-axis (SAX) stack over time, ``image`` (I, J, K, T) in [0, 1] with ``labels`` 0 background,
1 LV blood pool, 2 LV myocardium, 3 RV blood pool. Voxel (i, j, k) sits at (i dx, j dy, k dz) mm; slice 0 is
the base, the apex points to larger k and the last slices lie beyond it. The heart is built in mm from
analytic surfaces: the LV cavity a truncated prolate ellipsoid, the myocardium a shell around it (its volume
is conserved while it contracts), the RV a crescent (an ellipsoid beside the LV minus the LV) that tapers
before the apex, and a thin epicardial fat layer around the whole heart. ED is frame 0, contraction is
sinusoidal with ES at frame T / 2. Intensities: blood 0.85-0.95, myocardium 0.25-0.35, epicardial fat 0.55-0.6,
textured body 0.05-0.5 with dark lungs; light in-plane blur and Gaussian noise. numpy + scipy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from ldseg_suite.data.synthetic import _smooth_noise

VIEWS = {"4ch": 0.0, "3ch": 45.0, "2ch": 90.0}  # LAX rotation about the long axis, degrees from the RV direction


@dataclass(frozen=True, eq=False)
class CardiacCase:
    image: np.ndarray      # float32 (I, J, K, T) in [0, 1]
    labels: np.ndarray     # uint8 (I, J, K, T): 0 bg, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool
    spacing: tuple         # (dx, dy, dz) mm
    ed_frame: int          # largest LV blood pool
    es_frame: int          # smallest LV blood pool
    base: np.ndarray       # (3,) voxel coordinates of the LV base centre (where the long axis leaves the base)
    lv_axis: np.ndarray    # (3,) unit vector in mm space (i, j, k order), base -> apex
    rv_dir: np.ndarray     # (3,) unit vector in mm space, perpendicular to lv_axis, from the LV towards the RV
    lv_length: np.ndarray  # (T,) base-to-apex length of the LV cavity per frame, mm

    @property
    def lv_centre(self) -> np.ndarray:
        """Voxel coordinates of the LV cavity's mid-point on the long axis at ED."""
        return self.axis_point(0.5 * self.lv_length[self.ed_frame])

    def axis_point(self, s_mm: float) -> np.ndarray:
        """Voxel coordinates of the point ``s_mm`` from the base along the long axis."""
        return self.base + s_mm * self.lv_axis / np.asarray(self.spacing)


def _c(frames):
    return 0.5 * (1 - np.cos(2 * np.pi * np.arange(frames) / frames))  # 0 at ED (frame 0), 1 at ES


def make_cardiac_case(seed: int, size: int = 64, slices: int = 16, frames: int = 8) -> CardiacCase:
    """One beating heart. Spacing scales with the grid: dx = dy = 2.0 mm at size 64 (128 mm field of view),
    dz = 7 mm at 16 slices (112 mm: base at slice 0, apex ~slice 11-14). Per seed: LV size, eccentricity,
    length, wall thickness (6-10 mm), in-plane rotation, axis tilt (4-12 degrees), position, EF (~38-68 %)."""
    rng = np.random.default_rng([seed, 3000])
    sp = np.array([2.0 * 64 / size, 2.0 * 64 / size, 7.0 * 16 / slices])  # 128 mm FOV, 112 mm stack
    shape = (size, size, slices)
    p = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, sp)], indexing="ij"), -1).astype(np.float32)
    # heart frame: long axis a (tilted from k), rv direction e1 (random in-plane angle), e2 = a x e1
    tilt, azim, theta = np.radians(rng.uniform(4, 12)), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
    a = np.array([np.sin(tilt) * np.cos(azim), np.sin(tilt) * np.sin(azim), np.cos(tilt)])
    e1 = np.array([np.cos(theta), np.sin(theta), 0.0])
    e1 = (e1 - e1 @ a * a) / np.linalg.norm(e1 - e1 @ a * a)
    e2 = np.cross(a, e1)
    fov = (np.array(shape) - 1) * sp
    # the base plane lies just above slice 0 across the heart (~50 mm from the axis), so slice 0 is a full ring
    z0 = -50 * np.tan(tilt) - rng.uniform(0, 0.4) * sp[2]
    base = np.array([*(fov[:2] / 2 - 8 * e1[:2] + rng.uniform(-5, 5, 2)), z0])
    rel = p - base
    x, y, s = rel @ e1, rel @ e2, rel @ a
    # LV: cavity length lt = 1.15 L (centre 0.15 L below the base), radii r(1 +- ecc), wall w (thinner at apex)
    lt = rng.uniform(0.72, 0.85) * slices * sp[2]
    L, r, ecc, w = lt / 1.15, rng.uniform(19, 24), rng.uniform(0, 0.12), rng.uniform(6, 10)
    rx, ry, wa = r * (1 + ecc), r * (1 - ecc), 0.8 * w
    ef, fl_es = rng.uniform(0.38, 0.68), 1 - rng.uniform(0.08, 0.15)   # EF, longitudinal shortening
    fr_es = np.sqrt((1 - ef) / fl_es)                                  # radial factor at ES giving that EF
    frv_es, fat = rng.uniform(0.85, 0.92), rng.uniform(4.5, 6.0)
    blood, myo, fat_v = rng.uniform(0.85, 0.95), rng.uniform(0.25, 0.35), rng.uniform(0.55, 0.6)
    tissue = _background(rng, p, fov)
    image = np.zeros(shape + (frames,), np.float32)
    labels = np.zeros(shape + (frames,), np.uint8)
    lengths = []
    for t, c in enumerate(_c(frames)):
        fr, fl, frv = 1 - (1 - fr_es) * c, 1 - (1 - fl_es) * c, 1 - (1 - frv_es) * c
        sc = 0.15 * L * fl
        endo = ((x / (rx * fr)) ** 2 + (y / (ry * fr)) ** 2 + ((s - sc) / (L * fl)) ** 2 <= 1) & (s >= 0)
        # epicardium: the ED shell scaled by g so that the (untruncated) myocardial volume is conserved
        ex, ey, el = rx + w, ry + w, L + wa
        g = np.cbrt(1 - rx * ry * L * (1 - fr * fr * fl) / (ex * ey * el))

        def epi(d=0.0):
            return (x / (ex * g + d)) ** 2 + (y / (ey * g + d)) ** 2 + ((s - sc) / (el * g + d)) ** 2 <= 1

        def rv(d=0.0):  # scaled towards the LV as the RV contracts; tapers out before the LV apex
            ox = 0.6 * ex * g * frv
            return (((x - ox) / (0.85 * ex * g * frv + d)) ** 2 + (y / (1.15 * ey * g * frv + d)) ** 2
                    + ((s - sc) / (0.8 * el * fl + d)) ** 2 <= 1)

        lv_epi = epi() & (s >= 0)
        rv_pool = rv() & (s >= 0) & ~lv_epi
        fat_layer = (epi(fat) | rv(fat)) & (s >= -fat) & ~lv_epi & ~rv_pool
        lab = np.zeros(shape, np.uint8)
        lab[lv_epi], lab[endo], lab[rv_pool] = 2, 1, 3
        img = np.where(fat_layer, fat_v, tissue)
        img = np.where(lab == 2, myo, np.where(lab % 2 == 1, blood, img))
        img = ndimage.gaussian_filter(img, (0.5, 0.5, 0)) + rng.normal(0, 0.02, shape)
        image[..., t], labels[..., t] = np.clip(img, 0, 1), lab
        lengths.append(sc + L * fl)
    lv = (labels == 1).sum((0, 1, 2))
    return CardiacCase(image, labels, tuple(float(v) for v in sp), int(np.argmax(lv)), int(np.argmin(lv)),
                       base / sp, a, e1, np.array(lengths))


def _background(rng, p, fov):
    """Static textured body (0.05-0.5): an ellipse of soft tissue with blurred blobs and two dark lungs."""
    x, y = p[..., 0] - fov[0] / 2, p[..., 1] - fov[1] / 2
    body = (x / (0.62 * fov[0])) ** 2 + (y / (0.5 * fov[1])) ** 2 <= 1
    tex = 0.3 + 0.05 * _smooth_noise(rng, p.shape[:3], (3, 3, 1)) + 0.1 * _smooth_noise(rng, p.shape[:3], (8, 8, 2))
    side = rng.choice([-1, 1])
    lungs = np.zeros(body.shape, bool)
    for sgn in (-1, 1):
        cx, cy = sgn * 0.42 * fov[0], side * rng.uniform(0.05, 0.15) * fov[1]
        lungs |= ((x - cx) / (0.14 * fov[0])) ** 2 + ((y - cy) / (0.28 * fov[1])) ** 2 <= 1
    tex = np.where(lungs, 0.07 + 0.02 * _smooth_noise(rng, p.shape[:3], 2), tex)
    return np.where(body, np.clip(tex, 0.05, 0.5), 0.03).astype(np.float32)


def make_cardiac_cases(n: int, seed: int = 0, **kw) -> list:
    """``n`` cases with seeds ``seed * 1000 + i``."""
    return [make_cardiac_case(seed * 1000 + i, **kw) for i in range(n)]


def volumes_ml(labels, spacing) -> dict:
    """mL per frame (or a scalar for a 3D label map): {'lv': LV blood pool, 'myo': LV myocardium, 'rv': RV pool}."""
    labels, vox = np.asarray(labels), float(np.prod(spacing)) / 1000.0
    return {name: (labels == c).sum((0, 1, 2)) * vox for name, c in (("lv", 1), ("myo", 2), ("rv", 3))}


def ejection_fraction(edv, esv):
    """EF in %: 100 (EDV - ESV) / EDV."""
    return 100.0 * (edv - esv) / edv


def case_volumes(case: CardiacCase) -> dict:
    """Ground-truth LV EDV and ESV (mL) and EF (%)."""
    lv = volumes_ml(case.labels, case.spacing)["lv"]
    edv, esv = float(lv[case.ed_frame]), float(lv[case.es_frame])
    return dict(edv=edv, esv=esv, ef=float(ejection_fraction(edv, esv)))


def sax_observed(slices: int, keep_every: int = 3, missing=()) -> np.ndarray:
    """Sorted indices of the observed SAX slices: every ``keep_every``-th, minus ``missing``, ends always kept."""
    keep = set(range(0, slices, keep_every)) - {int(m) for m in missing}
    return np.array(sorted(keep | {0, slices - 1}), np.int64)


def _lax_dirs(case: CardiacCase, view: str):
    phi = np.radians(VIEWS[view])
    e2 = np.cross(case.lv_axis, case.rv_dir)
    return case.lv_axis, np.cos(phi) * case.rv_dir + np.sin(phi) * e2  # mm-space: rows (base->apex), columns


def _stack_centre(case: CardiacCase) -> np.ndarray:
    """Voxel coordinates where the long axis crosses the stack's middle slice."""
    k_mid = (case.labels.shape[2] - 1) / 2
    axis_vox = case.lv_axis / np.asarray(case.spacing)
    return case.base + (k_mid - case.base[2]) / axis_vox[2] * axis_vox


def lax_planes(case: CardiacCase, frame=None) -> dict:
    """{'2ch'|'3ch'|'4ch': (origin, u, v, shape)} for ``planes.sample_plane(volume, *plane)``.

    Every plane contains the LV long axis; 4ch also passes through the RV, 2ch is at 90 degrees, 3ch at 45.
    ``origin`` is where the long axis crosses the middle of the stack (voxel coordinates); u (rows, base ->
    apex) and v (columns) are the mm directions converted to voxel units (d / spacing). sample_plane
    normalises them, so one pixel is one *voxel* step: along u that is ~one slice (~dz mm, tilt included),
    along v ~one in-plane voxel, an anisotropic image; ``shape`` has enough rows to cross the whole stack.
    For an isotropic image (dx mm pixels) use ``lax_coords`` with ``planes.trilinear``. The phantom's axis
    does not move over the cycle (the base stays, the apex rises), so ``frame`` does not change the planes.
    """
    sp, (size, _, slices) = np.asarray(case.spacing), case.labels.shape[:3]
    out = {}
    for view in VIEWS:
        a, w = _lax_dirs(case, view)
        u, v = a / sp, w / sp
        u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
        rows = int(np.ceil(slices / abs(u[2]))) + 2
        out[view] = (_stack_centre(case), u, v, (rows, size))
    return out


def lax_coords(case: CardiacCase, view: str, shape=None) -> np.ndarray:
    """(h, w, 3) voxel coordinates of an isotropic LAX image (dx mm pixels) for ``planes.trilinear(volume, c)``.

    Same plane and origin as ``lax_planes``; rows run base -> apex; the default ``shape`` (I, I) covers the
    stack height (I dx = 128 mm > K dz = 112 mm at the default size).
    """
    sp = np.asarray(case.spacing)
    h, w = shape or (case.labels.shape[0],) * 2
    a, d = _lax_dirs(case, view)
    r = (np.arange(h) - (h - 1) / 2) * sp[0]
    c = (np.arange(w) - (w - 1) / 2) * sp[0]
    origin = _stack_centre(case)
    return (origin + (r[:, None, None] * a + c[None, :, None] * d) / sp).astype(np.float32)


def segment_by_intensity(image, blood: float = 0.7, dark: float = 0.45, spacing=(2.0, 2.0, 7.0),
                         max_wall_mm: float = 14.0) -> np.ndarray:
    """Classical labels of a phantom SAX volume (I, J, K) (or (I, J, K, T), frame by frame).

    1. Blood pools: ``image > blood``, split into the two ventricles by a watershed on the distance to the pool's
       edge, seeded by the two largest 3D components of the pool eroded by one pixel in-plane (so a one- or
       two-pixel bridge through a septum blurred by interpolation does not merge LV and RV; blood reached by
       neither seed keeps its own components). The LV is the pool whose in-plane rim is darkest (it is ringed
       by myocardium; the RV borders fat except at the septum).
    2. Myocardium, slice by slice: the dark (``< dark``) 2D components that touch the LV pool, kept within
       ``max_wall_mm`` of it (the fat layer, 0.55-0.6, closes them off). A slice without LV blood next to one with it
       (the apical cap) takes the dark component over that neighbour's pool if it stays within the same distance.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 4:
        return np.stack([segment_by_intensity(image[..., t], blood, dark, spacing, max_wall_mm)
                         for t in range(image.shape[-1])], -1)
    ring2d = np.zeros((3, 3, 3), bool)
    ring2d[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    comp, n = _blood_pools(image > blood, ring2d, spacing)
    sizes = ndimage.sum(np.ones_like(image), comp, np.arange(1, n + 1))
    pools = [comp == i + 1 for i in np.argsort(sizes)[::-1][:2] if sizes[i] >= 20]
    out = np.zeros(image.shape, np.uint8)
    if not pools:
        return out

    def rim_darkness(m):
        rim = ndimage.binary_dilation(m, ring2d, iterations=2) & ~m
        return (image[rim] < dark).mean()

    pools.sort(key=rim_darkness, reverse=True)
    lv = pools[0]
    out[lv] = 1
    if len(pools) > 1:
        out[pools[1]] = 3
    darkm = image < dark
    for k in range(image.shape[2]):
        seed, touch = lv[..., k], True
        if not seed.any():
            nbrs = [lv[..., j] for j in (k - 1, k + 1) if 0 <= j < image.shape[2] and lv[..., j].any()]
            if not nbrs:
                continue
            seed, touch = nbrs[0], False
        near = ndimage.distance_transform_edt(~seed, sampling=spacing[:2]) <= max_wall_mm
        cand, _ = ndimage.label(darkm[..., k])
        if touch:
            ids = np.unique(cand[ndimage.binary_dilation(seed) & (cand > 0)])
        else:
            ids = [i for i in np.unique(cand[seed & (cand > 0)]) if not ((cand == i) & ~near).any()]
        myo = np.isin(cand, ids) & near & (out[..., k] == 0)
        myo |= ndimage.binary_fill_holes(myo | seed) & (out[..., k] == 0)  # noisy pixels inside the wall
        out[..., k][myo] = 2
    return out


def _blood_pools(blood: np.ndarray, ring2d: np.ndarray, spacing) -> tuple[np.ndarray, int]:
    """Label the blood mask: the two largest in-plane-eroded cores seed a watershed on the edge distance."""
    core, n = ndimage.label(ndimage.binary_erosion(blood, ring2d))
    if n == 0:
        return ndimage.label(blood)
    sizes = ndimage.sum(core > 0, core, np.arange(1, n + 1))
    markers = np.zeros(blood.shape, np.int32)
    for rank, i in enumerate(np.argsort(sizes)[::-1][:2]):
        markers[core == i + 1] = rank + 1
    pools = watershed(-ndimage.distance_transform_edt(blood, sampling=spacing), markers, mask=blood)
    rest, _ = ndimage.label(blood & (pools == 0))
    pools[rest > 0] = rest[rest > 0] + 2
    return pools, int(pools.max())
