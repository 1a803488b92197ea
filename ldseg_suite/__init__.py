"""ldseg-suite: diffusion- and energy-based models for medical imaging on Keras 3 + TensorFlow."""
import os

# The one place the backend is chosen (DESIGN.md: conventions).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
