"""How a trained model is applied to a whole case, for every method (knows only "window in, channels out")."""
from ldseg_suite.inference.sliding_window import (
    BLENDS,
    MIN_WEIGHT,
    PAD_MODES,
    SlidingWindowInferer,
    gaussian_importance,
    sliding_window,
    window_starts,
)

__all__ = ["BLENDS", "MIN_WEIGHT", "PAD_MODES", "SlidingWindowInferer", "gaussian_importance", "sliding_window",
           "window_starts"]
