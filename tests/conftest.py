"""Imported before any test module: ldseg_suite first, so its environment defaults (Keras backend, TensorFlow's
oneDNN kernels) are set before a test imports TensorFlow, as they are for run.py."""
import ldseg_suite  # noqa: F401
