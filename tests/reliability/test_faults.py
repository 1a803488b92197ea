"""Faults during long work: SIGINT and SIGKILL mid-training, then resume; a NaN loss keeps the last checkpoint."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ldseg_suite import training
from ldseg_suite.errors import LDSegError
from ldseg_suite.models.ldseg import LDSeg

ROOT = Path(__file__).resolve().parents[2]


def start(cfg, out, epochs=3):
    return subprocess.Popen([sys.executable, "run.py", "--cfg", str(cfg), "--mode", "train", "--out", str(out),
                             "--set", f"Training.Epochs={epochs}", "--set", "Training.StepsPerEpoch=25",
                             "--set", "Training.RunEagerly=false"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def wait_for_epoch(out, epoch, proc, timeout=240):
    latest = out / "checkpoints" / "latest.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if latest.is_file() and json.loads(latest.read_text())["epoch"] >= epoch:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no checkpoint of epoch {epoch} within {timeout} s")


def test_sigint_then_sigkill_then_resume_finishes(tiny, tmp_path):
    cfg, _ = tiny
    out = tmp_path / "run"
    proc = start(cfg, out, epochs=30)  # many epochs left: the signal lands mid-run even on a loaded machine
    wait_for_epoch(out, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint saved" in err

    proc = start(cfg, out, epochs=30)
    wait_for_epoch(out, 2, proc)
    proc.kill()  # SIGKILL mid-run: no handler runs
    proc.wait(timeout=60)
    assert not (out / "model.weights.h5").exists()

    proc = start(cfg, out)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "resuming from" in stdout
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["epoch"] == 3
    assert "Epoch 3/3" in stdout and "Epoch 1/3" not in stdout
    model = LDSeg(in_channels=3, latent_channels=2, image_latent_channels=4, downsample=2, base_channels=8,
                  channel_mult=(1,), attention=False, timesteps=50)
    model.build((None, 16, 16, 3))
    training.load_weights(model, out / "model.weights.h5", "final weights")
    assert not list(out.rglob("tmp_*")) and not list(out.rglob(".tmp_*"))


class _Training:
    Resume, EMA, ClipNorm, LearningRate, JitCompile, RunEagerly = True, 0.0, 0.0, 1e-3, False, True


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    def build():
        m = LDSeg(in_channels=1, latent_channels=2, image_latent_channels=2, downsample=2, base_channels=8,
                  channel_mult=(1,), attention=False, timesteps=20)
        m.build((None, 8, 8, 1))
        return m

    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[..., 0] > 0.5).astype(int)]
    good = tf.data.Dataset.from_tensor_slices((x, y)).batch(2).repeat()
    assert training.fit(build, good, 2, 1, tmp_path, _Training).run_eagerly  # [Training] RunEagerly reaches Keras
    x_bad = x.copy()
    x_bad[1, 2, 2, 0] = np.nan
    bad = tf.data.Dataset.from_tensor_slices((x_bad, y)).batch(4).repeat()
    with pytest.raises(LDSegError, match=r"loss became nan at epoch 2, step 1; the last good checkpoint"):
        training.fit(build, bad, 2, 2, tmp_path, _Training)
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["epoch"] == 1
    model = keras.models.load_model(tmp_path / "checkpoints" / "epoch_0001.keras", safe_mode=True)
    assert all(np.isfinite(w).all() for w in model.get_weights())
