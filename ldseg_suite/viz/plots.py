"""Static plots (matplotlib, written atomically)."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".tmp_{path.name}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def robustness_plot(table, path, title: str = "") -> Path:
    """Mean Dice against sigma, one line per class, with a band of +-1 std over cases."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for col in [c for c in table.columns if c.startswith("dice_")]:
        stats = table.groupby("sigma")[col].agg(["mean", "std"]).fillna(0.0)
        ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=f"class {col.split('_')[1]}")
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
    ax.set_xlabel("sigma of added Gaussian noise (intensities in [0, 1])")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)
