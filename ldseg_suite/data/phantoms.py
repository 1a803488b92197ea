"""3D ellipsoid phantoms (Shepp-Logan-like head) for tests and for developing the TPDM pipeline.

``shepp_logan_3d`` is deterministic: the ten ellipsoids of the 3D Shepp-Logan head of Kak & Slaney (as in
the common "modified" contrast), rasterised on an n^3 grid over [-1, 1]^3. ``random_phantom`` perturbs their
centres, axes, angles and intensities with a seeded generator, for a family of similar volumes.
Values are float32 in [0, 1]; axes follow the project's convention (0 left-right, 1 posterior-anterior,
2 inferior-superior).
"""
from __future__ import annotations

import numpy as np

# intensity, semi-axes (a, b, c), centre (x, y, z), rotation about z (degrees)
ELLIPSOIDS = (
    (1.0, (0.69, 0.92, 0.81), (0.0, 0.0, 0.0), 0.0),
    (-0.8, (0.6624, 0.874, 0.78), (0.0, -0.0184, 0.0), 0.0),
    (-0.2, (0.11, 0.31, 0.22), (0.22, 0.0, 0.0), -18.0),
    (-0.2, (0.16, 0.41, 0.28), (-0.22, 0.0, 0.0), 18.0),
    (0.1, (0.21, 0.25, 0.41), (0.0, 0.35, -0.15), 0.0),
    (0.1, (0.046, 0.046, 0.05), (0.0, 0.1, 0.25), 0.0),
    (0.1, (0.046, 0.046, 0.05), (0.0, -0.1, 0.25), 0.0),
    (0.1, (0.046, 0.023, 0.05), (-0.08, -0.605, 0.0), 0.0),
    (0.1, (0.023, 0.023, 0.02), (0.0, -0.606, 0.0), 0.0),
    (0.1, (0.023, 0.046, 0.02), (0.06, -0.605, 0.0), 0.0),
)


def _rasterise(n: int, ellipsoids) -> np.ndarray:
    g = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    vol = np.zeros((n, n, n), np.float32)
    for rho, (a, b, c), (x0, y0, z0), phi in ellipsoids:
        t = np.deg2rad(phi)
        xr = (x - x0) * np.cos(t) + (y - y0) * np.sin(t)
        yr = -(x - x0) * np.sin(t) + (y - y0) * np.cos(t)
        vol += rho * (((xr / a) ** 2 + (yr / b) ** 2 + ((z - z0) / c) ** 2) <= 1.0)
    return vol


def shepp_logan_3d(n: int = 64) -> np.ndarray:
    """The 3D Shepp-Logan head on an n^3 grid, scaled to [0, 1] (float32)."""
    vol = np.clip(_rasterise(n, ELLIPSOIDS), 0.0, None)
    return (vol / vol.max()).astype(np.float32)


def random_phantom(n: int = 64, seed: int = 0, jitter: float = 0.05) -> np.ndarray:
    """A seeded perturbation of the Shepp-Logan head: centres, axes, angles and intensities jittered."""
    rng = np.random.default_rng(seed)
    ells = []
    for k, (rho, axes, centre, phi) in enumerate(ELLIPSOIDS):
        if k < 2:  # keep the skull shell intact, only scale it a little
            s = 1.0 + rng.uniform(-jitter, jitter)
            ells.append((rho, tuple(s * a for a in axes), centre, phi))
            continue
        ells.append((rho * (1.0 + rng.uniform(-0.5, 0.5)),
                     tuple(a * (1.0 + rng.uniform(-3, 3) * jitter) for a in axes),
                     tuple(c + rng.uniform(-jitter, jitter) for c in centre),
                     phi + rng.uniform(-20, 20)))
    vol = np.clip(_rasterise(n, ells), 0.0, None)
    return (vol / max(float(vol.max()), 1e-6)).astype(np.float32)
