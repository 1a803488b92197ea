"""Deterministic 3D vertebra-like binary masks (for thick-slice shape reconstruction).

Two generators:

- ``make_vertebrae`` (the first demo set): one vertebra, a cylindrical body, a neural arch (a half ring
  behind the body around the canal), a spinous process pointing back and two transverse processes, with
  random sizes and a small random rotation (scipy resampling).
- ``make_segments`` (lumbar spine segments, for the thick-slice regime of Wang et al. 2024): a central
  vertebra and the parts of its two neighbours that fall in the field of view (one class). A vertebra is an
  elliptic body with its own width, depth (aspect), height, anterior wedging and concave endplates, 0-3
  osteophyte-like bumps on the endplate rims, a neural arch around an elliptic canal, superior and inferior
  articular processes, a spinous process with its own length, downward angle and thickness, and two
  transverse processes with their own lengths and angles. The neighbours repeat the central vertebra's
  parameters with changes of up to 10 %, above and below an intervertebral disc of random height, tilted by
  a small lordotic angle. The whole segment gets a small random rotation and shift. Everything is an
  implicit function of rotated voxel coordinates (no resampling artefacts).

Sizes are in voxels of a 64^3 grid and scale with ``size``. Axes: x left-right, y anterior-posterior (body
at -y), z cranio-caudal.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def make_vertebra(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    n = size
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) - n / 2 + 0.5,) * 3, indexing="ij")
    s = n / 64.0
    body_r = rng.uniform(9, 12) * s
    body_h = rng.uniform(8, 11) * s
    body_y = rng.uniform(-8, -5) * s  # anterior
    body = ((x ** 2 + (y - body_y) ** 2) <= body_r ** 2) & (np.abs(z) <= body_h)
    canal_r = rng.uniform(4.5, 6.5) * s
    canal_y = body_y + body_r + canal_r + 0.5 * s
    ring = np.sqrt(x ** 2 + (y - canal_y) ** 2)
    arch_w = rng.uniform(2.5, 4.0) * s
    arch = (ring >= canal_r) & (ring <= canal_r + arch_w) & (y >= body_y + body_r * 0.6) & (np.abs(z) <= body_h * 0.55)
    spine_len = rng.uniform(9, 14) * s
    spine_top = canal_y + canal_r + arch_w * 0.5
    spine = (np.abs(x) <= 1.6 * s) & (y >= spine_top) & (y <= spine_top + spine_len) & \
        (np.abs(z + (y - spine_top) * rng.uniform(0.2, 0.5)) <= 3.0 * s)
    trans_len = rng.uniform(10, 15) * s
    trans = (np.abs(x) >= canal_r) & (np.abs(x) <= canal_r + trans_len) & \
        (np.abs(y - canal_y) <= 1.8 * s) & (np.abs(z) <= 2.2 * s)
    shape = body | arch | spine | trans
    angles = rng.uniform(-12, 12, 3)
    for deg, axes in zip(angles, ((0, 1), (0, 2), (1, 2))):
        shape = ndimage.rotate(shape.astype(np.float32), deg, axes=axes, reshape=False, order=1) > 0.5
    shift = rng.uniform(-2, 2, 3) * s
    shape = ndimage.shift(shape.astype(np.float32), shift, order=1) > 0.5
    return shape.astype(np.uint8)


def make_vertebrae(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """``n`` binary vertebra masks of ``size``^3, the same for the same seed."""
    return [make_vertebra(np.random.default_rng([seed, 3000 + i]), size) for i in range(n)]


def _rotation(degrees) -> np.ndarray:
    """Rotation matrix of angles (about x, y, z), applied in that order."""
    a, b, c = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _parameters(rng: np.random.Generator) -> dict:
    """One vertebra's shape parameters (64^3-voxel units)."""
    rx = rng.uniform(9.0, 13.0)
    p = dict(rx=rx, ry=rx * rng.uniform(0.68, 0.95), h=rng.uniform(6.5, 10.5), wedge=rng.uniform(-0.18, 0.18),
             concave=rng.uniform(0.0, 2.5), canal_r=rng.uniform(4.0, 6.0), canal_aspect=rng.uniform(1.0, 1.4),
             arch_w=rng.uniform(2.5, 4.5), arch_h=rng.uniform(0.45, 0.7),
             spine_len=rng.uniform(8.0, 17.0), spine_slope=rng.uniform(0.1, 0.75), spine_w=rng.uniform(1.2, 2.3),
             spine_h=rng.uniform(2.5, 4.5),
             trans_len=rng.uniform(7.0, 16.0), trans_angle=rng.uniform(-10.0, 30.0),
             trans_tilt=rng.uniform(-0.25, 0.25), trans_asym=rng.uniform(-2.5, 2.5), trans_w=rng.uniform(1.4, 2.3),
             trans_h=rng.uniform(1.6, 2.8),
             facet_len=rng.uniform(3.0, 6.5), facet_r=rng.uniform(1.5, 2.5))
    bumps = []
    for _ in range(rng.integers(0, 4)):  # osteophyte-like bumps on an endplate rim
        bumps.append((rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0]), rng.uniform(1.5, 3.2)))
    p["bumps"] = bumps
    return p


def _jitter(rng: np.random.Generator, p: dict, amount: float = 0.1) -> dict:
    """A neighbour: the same vertebra with every size changed by up to ``amount`` and its own bumps."""
    q = {k: (v * rng.uniform(1 - amount, 1 + amount) if isinstance(v, float) else v) for k, v in p.items()}
    q["bumps"] = [(rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0]), rng.uniform(1.5, 3.2))
                  for _ in range(rng.integers(0, 3))]
    return q


def _vertebra(x, y, z, p: dict) -> np.ndarray:
    """Boolean mask of one vertebra centred on its body (body centre at the origin)."""
    rx, ry, h = p["rx"], p["ry"], p["h"]
    rho2 = (x / rx) ** 2 + (y / ry) ** 2
    height = h * (1 + p["wedge"] * y / ry) - p["concave"] * np.clip(1 - rho2, 0, 1)
    parts = (rho2 <= 1) & (np.abs(z) <= height)
    for angle, side, r in p["bumps"]:
        bx, by, bz = 1.02 * rx * np.cos(angle), 1.02 * ry * np.sin(angle), side * h * (1 + p["wedge"] * np.sin(angle))
        parts |= (x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2 <= r ** 2
    # neural arch: a half ring behind the body around an elliptic canal
    cr, cy = p["canal_r"], ry + 0.8 * p["canal_r"]
    ring = np.sqrt((x / p["canal_aspect"]) ** 2 + (y - cy) ** 2)
    arch_top = h * p["arch_h"]
    parts |= (ring >= cr) & (ring <= cr + p["arch_w"]) & (y >= 0.5 * ry) & (np.abs(z) <= arch_top)
    # articular processes: short vertical pillars at the arch's sides, up (superior) and down (inferior)
    fx, fy = cr * p["canal_aspect"] + 0.5 * p["arch_w"], cy + 0.4 * cr
    pillar = (np.abs(x) - fx) ** 2 + (y - fy) ** 2 <= p["facet_r"] ** 2
    parts |= pillar & (np.abs(z) <= arch_top + p["facet_len"])
    # spinous process: back from the arch, sloping down
    top = cy + cr + 0.5 * p["arch_w"]
    along = y - top
    parts |= (np.abs(x) <= p["spine_w"]) & (along >= -1) & (along <= p["spine_len"]) & \
        (np.abs(z + along * p["spine_slope"]) <= p["spine_h"] * (1 - 0.3 * np.clip(along / p["spine_len"], 0, 1)))
    # transverse processes: sideways from the arch, angled back and tilted up or down
    for sign in (-1.0, 1.0):
        length = p["trans_len"] + sign * p["trans_asym"] / 2
        ang = np.deg2rad(p["trans_angle"])
        u = sign * x - cr * p["canal_aspect"]                     # outwards from the canal
        off = y - cy - u * np.tan(ang)                            # distance from the process axis, in y
        parts |= (u >= 0) & (u <= length) & (np.abs(off) <= p["trans_w"]) & \
            (np.abs(z - u * p["trans_tilt"]) <= p["trans_h"])
    return parts


def make_segment(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A (size,)^3 uint8 mask: a central vertebra and its neighbours' parts in the field of view."""
    s = size / 64.0
    grid = np.stack(np.meshgrid(*(np.arange(size, dtype=np.float32) - size / 2 + 0.5,) * 3, indexing="ij"))
    # the segment's pose: small rotation and shift, then body centre slightly anterior
    rot = _rotation(rng.uniform(-10, 10, 3))
    shift = np.array([*rng.uniform(-2, 2, 2), rng.uniform(-2.5, 2.5)]) * s
    local = np.einsum("ij,j...->i...", rot.T, grid - shift[:, None, None, None]) / s
    local[1] += rng.uniform(5.0, 9.0)  # the body sits anterior of the centre
    p = _parameters(rng)
    mask = _vertebra(*local, p)
    for side in (-1.0, 1.0):  # the neighbours above and below, across a disc, tilted (lordosis)
        q = _jitter(rng, p)
        disc = rng.uniform(2.5, 5.5)
        gap = side * (p["h"] + q["h"] + disc)
        tilt = _rotation([rng.uniform(-8, 8), rng.uniform(-3, 3), rng.uniform(-3, 3)])
        pivot = np.array([0.0, 0.0, side * (p["h"] + disc / 2)])
        moved = np.einsum("ij,j...->i...", tilt.T, local - pivot[:, None, None, None]) + pivot[:, None, None, None]
        moved[2] -= gap
        moved[1] -= rng.uniform(-1.5, 1.5)
        mask |= _vertebra(*moved, q)
    return mask.astype(np.uint8)


def make_segments(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """``n`` binary spine-segment masks of ``size``^3, the same for the same seed."""
    return [make_segment(np.random.default_rng([seed, 3000 + i]), size) for i in range(n)]


GENERATORS = {"vertebra": make_vertebrae, "segment": make_segments}
