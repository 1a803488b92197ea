"""Training loop shared by every method: optimiser, atomic checkpoints, resume, NaN guard, logs.

A checkpoint is a whole-model ``.keras`` file (weights, optimiser state incl. EMA, the model's seed
generator state) plus ``latest.json`` naming it with the epoch it completed. Each file is written under a
temporary name and renamed, and ``latest.json`` is replaced last, so a kill at any moment leaves the
previous complete checkpoint in place.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ldseg_suite import distribute
from ldseg_suite.errors import LDSegError

LATEST = "latest.json"
FINAL_WEIGHTS = "model.weights.h5"


def make_optimizer(training_cfg):
    ema = training_cfg.EMA
    return keras.optimizers.Adam(
        learning_rate=training_cfg.LearningRate,
        clipnorm=training_cfg.ClipNorm or None,
        use_ema=ema > 0,
        ema_momentum=ema if ema > 0 else 0.99,
    )


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp_{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(model, ckpt_dir: Path, epoch: int, keep: int = 2) -> Path:
    """Save the whole model after ``epoch`` (1-based count of completed epochs) atomically."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = checkpoint_path(ckpt_dir, epoch).name
    tmp = ckpt_dir / f"tmp_{name}"
    model.save(tmp)
    os.replace(tmp, ckpt_dir / name)
    atomic_write_text(ckpt_dir / LATEST, json.dumps({"epoch": epoch, "file": name,
                                                      "numpy_rng": np.random.get_state()[1][:4].tolist()}))
    for old in sorted(ckpt_dir.glob("epoch_*.keras"))[:-keep]:
        old.unlink()
    return ckpt_dir / name


def checkpoint_path(ckpt_dir: Path, epoch: int) -> Path:
    """The checkpoint file written after ``epoch`` completed epochs."""
    return Path(ckpt_dir) / f"epoch_{epoch:04d}.keras"


def latest_checkpoint(ckpt_dir: Path):
    """(path, completed epochs) of the last complete checkpoint, or (None, 0)."""
    info_path = ckpt_dir / LATEST
    if not info_path.is_file():
        return None, 0
    try:
        info = json.loads(info_path.read_text())
        path = ckpt_dir / info["file"]
        epoch = int(info["epoch"])
    except (ValueError, KeyError, TypeError):
        raise LDSegError(f"{info_path}: unreadable checkpoint index (expected JSON with 'epoch' and 'file')") from None
    if not path.is_file():
        raise LDSegError(f"{info_path}: names {info['file']}, which is missing")
    return path, epoch


def load_checkpoint(path: Path):
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read the file is a bad input
        raise LDSegError(f"{path}: cannot load checkpoint ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:200]})") from None


def load_weights(model, path: Path, what: str) -> None:
    """Load a ``.weights.h5`` file into ``model``; a file of another configuration is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise LDSegError(f"{what} = {path}: weights file not found (train with --mode train, "
                         f"or point it at a .weights.h5 file)")
    try:
        with warnings.catch_warnings():  # a mismatched file also warns per skipped layer: the error says it all
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise LDSegError(f"{what} = {path}: weights do not match this config's [Model] ({first})") from None


class Checkpointer(keras.callbacks.Callback):
    """Atomic whole-model checkpoint after every epoch; also on SIGINT (then exits 130)."""

    def __init__(self, ckpt_dir: Path, guard: "NaNGuard", sigint: "SigintStop | None" = None):
        super().__init__()
        self.ckpt_dir, self.guard, self.sigint = ckpt_dir, guard, sigint
        self.completed = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.failed:  # never overwrite the last good checkpoint with non-finite weights
            return
        if self.sigint is not None and self.sigint.received:  # Keras ends a SIGINT-stopped epoch early: not done
            return
        self.completed = epoch + 1
        save_checkpoint(self.model, self.ckpt_dir, self.completed)


class SigintStop(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) during ``fit`` stops training at the next batch end.

    Python raises KeyboardInterrupt only between bytecodes; a SIGINT that lands while TensorFlow runs a step
    can reach Keras' iterator code and be lost, and the run then simply trains on. A handler that only sets a
    flag, checked after every batch, cannot be lost. ``fit`` then saves a checkpoint and raises
    KeyboardInterrupt (exit code 130).
    """

    def __init__(self):
        super().__init__()
        self.received = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda *_: setattr(self, "received", True))
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_train_batch_end(self, batch, logs=None):
        if self.received:
            self.model.stop_training = True


class NaNGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss, naming the epoch and step; the last checkpoint stays."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failed = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failed = f"loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}"
            self.model.stop_training = True


def ema_warning(momentum: float, total_steps: int) -> str | None:
    """A warning when the weight EMA cannot forget the initialisation within the run, else None.

    After n steps the EMA still holds momentum^n of the initial weights (Keras starts it there, without bias
    correction); above 5 % the exported weights are visibly worse than the trained ones.
    """
    if momentum <= 0 or momentum ** total_steps <= 0.05:
        return None
    return (f"[Training] EMA = {momentum}: after {total_steps} steps the exported (averaged) weights still hold "
            f"{100 * momentum ** total_steps:.0f} % of the initialisation; lower EMA or train longer")


def fit(build_model, train_ds, steps_per_epoch: int, epochs: int, run_dir: Path, training_cfg, val_ds=None,
        val_steps=None, strategy=None, loss=None, metrics=None, file_backed: bool = False):
    """Train to ``epochs`` total epochs, resuming from ``run_dir/checkpoints`` when it has a checkpoint.

    ``build_model()`` makes a new built model (called inside ``strategy.scope()``); ``loss`` and ``metrics`` go
    to ``compile`` for models that use Keras' own train_step. Returns the trained
    model with its EMA weights swapped in, also exported to ``run_dir/model.weights.h5``.

    Multi-worker: every worker calls this with its own ``run_dir`` (``distribute.prepare``: the chief's ``--out``,
    a temporary folder for the others) and saves there, as TensorFlow's multi-worker tutorial does; a non-chief
    worker resumes from the chief's checkpoints when it sees them (one machine, shared folder), else from its own,
    and the workers agree on the smallest completed epoch. ``train_ds`` and ``val_ds`` are sharded
    over workers by file when ``file_backed`` (file-reading tf.data sources), else by data.
    """
    strategy = strategy or tf.distribute.get_strategy()
    options = distribute.shard_options(file_backed)
    train_ds = train_ds.with_options(options) if isinstance(train_ds, tf.data.Dataset) else train_ds
    val_ds = val_ds.with_options(options) if isinstance(val_ds, tf.data.Dataset) else val_ds
    ckpt_dir = run_dir / "checkpoints"
    source = distribute.checkpoint_source(ckpt_dir)  # a non-chief worker reads the chief's when it sees them
    path, done = latest_checkpoint(source)
    agreed = distribute.agree_on_epoch(strategy, done)
    if agreed != done:  # another worker was stopped before saving its last checkpoint
        path = checkpoint_path(source, agreed) if agreed else None
        if path is not None and not path.is_file():
            raise LDSegError(f"{source}: the other workers resume from epoch {agreed} but {path.name} is gone")
        print(f"another worker completed only {agreed} epochs: resuming from there", flush=True)
        done = agreed
    with strategy.scope():
        if path is not None:
            if not training_cfg.Resume:
                raise LDSegError(f"{source} has a checkpoint (epoch {done}); pass --resume to continue it "
                                 f"or --out to start a new run")
            model = load_checkpoint(path)
            print(f"resuming from {path} (completed epochs: {done})", flush=True)
        else:
            model = build_model()
            model.compile(optimizer=make_optimizer(training_cfg), loss=loss, metrics=metrics,
                          jit_compile=training_cfg.JitCompile)
        # the optimiser's variables (moments, EMA) made now: made lazily inside the first traced train step, they
        # force a second trace of it (a tiny LDSeg's first fit: 12.0 -> 6.9 CPU-s)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    model.run_eagerly = training_cfg.RunEagerly  # not part of a checkpoint: the config decides on resume too
    distribute.fit_ready(model, strategy)
    note = ema_warning(training_cfg.EMA, steps_per_epoch * epochs)
    if note:
        print(f"warning: {note}", file=sys.stderr, flush=True)
    if done >= epochs:
        print(f"nothing to do: {done} epochs already completed (asked for {epochs})", flush=True)
        model.optimizer.finalize_variable_values(model.trainable_variables)  # model.fit would do this
    else:
        guard = NaNGuard()
        sigint = SigintStop()
        checkpointer = Checkpointer(ckpt_dir, guard, sigint)
        callbacks = [guard, checkpointer, sigint, keras.callbacks.TensorBoard(str(run_dir / "logs"))]
        try:
            with sigint.installed():
                model.fit(train_ds, steps_per_epoch=steps_per_epoch, epochs=epochs, initial_epoch=done,
                          validation_data=val_ds, validation_steps=val_steps, callbacks=callbacks,
                          shuffle=False, verbose=1 if sys.stdout.isatty() else 2)
            if sigint.received:
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            save_checkpoint(model, ckpt_dir, checkpointer.completed or done)
            print(f"interrupted: checkpoint saved in {ckpt_dir}", file=sys.stderr)
            raise
        except tf.errors.OpError as exc:  # multi-worker: a lost peer aborts the collectives of every other worker
            if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
                raise
            lines = [ln.strip() for ln in str(exc).splitlines() if "aborted by" in ln or "heartbeat" in ln.lower()]
            raise LDSegError(f"training stopped: another worker was lost ({(lines or [type(exc).__name__])[0][:160]}); "
                             f"the last complete checkpoint (epoch {checkpointer.completed or done}) is in {ckpt_dir}: "
                             f"start every worker again with the same command to resume") from None
        if guard.failed:
            raise LDSegError(f"training stopped: {guard.failed}; the last good checkpoint is kept in {ckpt_dir}")
    export_weights(model, run_dir / FINAL_WEIGHTS)
    return model


def export_weights(model, path: Path) -> Path:
    """Save the model's weights only (no optimiser slots or EMA copies), gzip-compressed, atomically."""
    bare = model.__class__.from_config(model.get_config())
    bare.build_from_config(model.get_build_config())
    bare.set_weights(model.get_weights())
    tmp = path.with_name(f"tmp_{path.name}")
    bare.save_weights(tmp)
    compress_h5(tmp, path)
    tmp.unlink()
    return path


def compress_h5(src: Path, dst: Path) -> Path:
    """Copy an HDF5 weights file with every array gzip-compressed (lossless; h5py decompresses on load).

    Saves 5-15 % on trained weights (more on an EBM's replay buffer); Keras' ``save_weights`` writes raw arrays.
    The copy is written under a temporary name and renamed, so ``dst`` may be ``src``.
    """
    import h5py

    tmp = Path(dst).with_name(f".tmp_{Path(dst).name}")
    with h5py.File(src, "r") as fin, h5py.File(tmp, "w") as fout:
        fout.attrs.update(fin.attrs)

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                fout.require_group(name).attrs.update(obj.attrs)
            else:
                big = obj.shape != () and obj.size > 64
                fout.create_dataset(name, data=obj[()], **(dict(compression="gzip", compression_opts=9,
                                                                shuffle=True) if big else {}))
                fout[name].attrs.update(obj.attrs)

        fin.visititems(copy)
    os.replace(tmp, dst)
    return Path(dst)
