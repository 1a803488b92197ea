"""ldseg-suite: diffusion- and energy-based models for medical imaging on Keras 3 + TensorFlow."""
import os

# The one place the backend is chosen (DESIGN.md: conventions).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow runs its convolutions on oneDNN only on CPUs with AVX-512 VNNI/BF16/AMX unless asked; on AVX2-only
# CPUs its default Eigen kernels made 64^3 window inference 2.6x slower (docs/performance.md: "oneDNN"). Takes
# effect only when ldseg_suite is imported before TensorFlow (run.py, the tests and the benchmarks do); export
# TF_ENABLE_ONEDNN_OPTS=0 to keep TensorFlow's choice.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
