"""Noise schedules as float32 tables (numpy here; samplers turn them into tensors)."""
from __future__ import annotations

import numpy as np


def betas(kind: str, timesteps: int, beta_0: float = 1e-4, beta_T: float = 0.02) -> np.ndarray:
    """Beta_t for t = 0..T-1. ``linear`` (Ho et al.) or ``cosine`` (Nichol & Dhariwal, s = 0.008)."""
    if kind == "linear":
        return np.linspace(beta_0, beta_T, timesteps, dtype=np.float64).astype(np.float32)
    if kind == "cosine":
        s = 0.008
        steps = np.arange(timesteps + 1, dtype=np.float64) / timesteps
        f = np.cos((steps + s) / (1 + s) * np.pi / 2) ** 2
        alpha_bar = f / f[0]
        return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999).astype(np.float32)
    raise ValueError(f"unknown schedule {kind!r}: expected linear or cosine")


def alphas_cumprod(beta: np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 - beta.astype(np.float64)).astype(np.float32)


def ddim_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """Evenly spaced, strictly decreasing timesteps from T-1 to 0 (``steps`` of them)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in [1, {timesteps}], got {steps}")
    ts = np.round(np.linspace(timesteps - 1, 0, steps)).astype(np.int32)
    return ts
