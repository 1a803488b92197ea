"""tf.distribute strategies, worker roles, data sharding and mixed precision from the config.

Models scale their losses by the global batch (``per-example sum / (local batch x replicas)``) and Keras sums
gradients over replicas, so a ``mirrored`` or ``multiworker`` run needs no code change and matches one device
trained on the same global batch (``[Training] BatchSize`` is the global batch; each replica gets its share).

Multi-worker runs (``[Distribute] Strategy = multiworker``, one process per machine, ``TF_CONFIG`` set) follow
TensorFlow's Keras multi-worker tutorial: every worker runs the same command and saves the same files (saving
may need collective ops), but only the chief (task ``chief``, or ``worker`` 0 when the cluster has no chief)
writes to ``--out``; every other worker writes to ``<out>/.worker-<index>``, which holds its own checkpoints
for a restart and is removed when the run ends well. ``prepare`` sets this up before TensorFlow starts.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from ldseg_suite.errors import LDSegError

_STRATEGIES: dict = {}


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
        task = value["task"]
        str(task["type"]), int(task["index"]), dict(value["cluster"])
    except (ValueError, KeyError, TypeError):
        raise LDSegError('TF_CONFIG: expected JSON {"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": N}}') from None
    return value


def is_chief() -> bool:
    """True for a single process and for the chief of a cluster (``chief`` task, else ``worker`` 0)."""
    conf = tf_config()
    if not conf:
        return True
    task_type, index = conf["task"]["type"], int(conf["task"]["index"])
    if "chief" in conf["cluster"]:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def worker_dir(out: Path) -> Path:
    """Where this process writes: ``out`` for the chief, ``out/.<type>-<index>`` (temporary) for the others."""
    if is_chief():
        return Path(out)
    task = tf_config()["task"]
    return Path(out) / f".{task['type']}-{int(task['index'])}"


def prepare(cfg, mode: str, out: Path) -> Path:
    """Call once at start, before any TensorFlow op: GPU memory growth, the multi-worker strategy (it must
    configure collective ops before TensorFlow's runtime starts) and this worker's output folder."""
    enable_memory_growth()
    name = cfg.Distribute.Strategy if "Distribute" in cfg else "none"
    if name != "multiworker" or mode != "train":
        return Path(out)
    strategy_for(name)
    own = worker_dir(out)
    if own != Path(out):
        own.mkdir(parents=True, exist_ok=True)
        if (Path(out) / "split.csv").is_file() and not (own / "split.csv").exists():
            shutil.copyfile(Path(out) / "split.csv", own / "split.csv")  # a split the chief's run already has
        print(f"worker {tf_config()['task']['index']}: not the chief; writing to {own} (removed at the end)",
              flush=True)
    return own


def finish(run_dir: Path) -> None:
    """After a run that ended well: remove a non-chief worker's temporary folder."""
    if not is_chief() and Path(run_dir).name.startswith(".") and Path(run_dir).is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)


def enable_memory_growth() -> list:
    """Let TensorFlow allocate GPU memory as needed instead of all at once (no-op without GPUs)."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # the runtime already started (e.g. in tests): the setting can no longer change
            pass
    return gpus


def strategy_for(name: str):
    """The strategy named by ``[Distribute] Strategy``, made once per process.

    ``mirrored`` uses every local GPU (or the CPU when there is none); ``multiworker`` needs ``TF_CONFIG``.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name not in ("mirrored", "multiworker"):
        raise LDSegError(f"[Distribute] Strategy = {name}: expected none, mirrored or multiworker")
    if name not in _STRATEGIES:
        if name == "mirrored":
            _STRATEGIES[name] = tf.distribute.MirroredStrategy()  # all local GPUs; the CPU when there is none
        else:
            if not tf_config():
                raise LDSegError("[Distribute] Strategy = multiworker needs the TF_CONFIG environment variable "
                                 "(cluster and task of this worker; see docs/scale-out.md)")
            try:
                _STRATEGIES[name] = tf.distribute.MultiWorkerMirroredStrategy()
            except RuntimeError as exc:
                raise LDSegError(f"[Distribute] Strategy = multiworker: {exc} (make the strategy with "
                                 f"distribute.prepare before any TensorFlow op)") from None
    return _STRATEGIES[name]


def shard_options(file_backed: bool) -> tf.data.Options:
    """tf.data options that split a dataset over workers: by file for file-backed datasets (each worker reads
    its own files), else by data (each worker keeps its share of every global batch). No example is seen twice
    per epoch either way."""
    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.FILE if file_backed else policy.DATA
    return options


def checkpoint_source(ckpt_dir: Path) -> Path:
    """Where this worker resumes from: the chief's ``<out>/checkpoints`` when a non-chief worker sees it (one
    machine, or a shared folder), so all workers load the same file; else its own ``ckpt_dir``."""
    ckpt_dir = Path(ckpt_dir)
    if is_chief() or not ckpt_dir.parent.name.startswith("."):
        return ckpt_dir
    chief = ckpt_dir.parent.parent / ckpt_dir.name
    return chief if (chief / "latest.json").is_file() else ckpt_dir


def agree_on_epoch(strategy, done: int) -> int:
    """The count of completed epochs all workers resume from: the smallest over workers (a worker killed while
    saving may be one checkpoint behind); ``done`` itself for a single worker. Counts further apart mean the
    workers read different run folders: a one-line LDSegError on every worker."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return done

    @tf.function
    def gather():
        return strategy.gather(strategy.run(lambda: tf.constant([done], tf.int64)), axis=0)

    counts = [int(c) for c in gather().numpy()]
    if max(counts) - min(counts) > 1:
        raise LDSegError(f"the workers found checkpoints of epochs {sorted(set(counts))}: each resumes from "
                         f"<out>/checkpoints when it sees the chief's folder, else from its own "
                         f"<out>/.worker-<i>/checkpoints; share --out or copy the chief's checkpoints there")
    return min(counts)


def fit_ready(model, strategy):
    """Let Keras 3's ``fit`` run ``model`` under MultiWorkerMirroredStrategy (a no-op for other strategies).

    Two Keras 3 bugs (keras-team/keras#20585, tensorflow/tensorflow#72388) stop ``fit`` with this strategy:
    its first-batch build passes the whole (x, y) structure of per-replica values to one cross-worker reduce
    (TypeError), and it averages the step logs over workers along axis 0, which scalars lack (ValueError). The
    build here takes the local values instead (and reads no batch when the model is built: a first iterator
    would advance the shuffle, so the data order would differ from a single process), and the train/test steps
    return their scalar logs as 1-vectors (averaged over workers by Keras, scalars again). Training math is
    unchanged: the optimizer still sums the gradients over all replicas.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def unbuilt(part) -> bool:
        return part is not None and not part.built

    def build(iterator=None, data_batch=None):
        needs_data = not all(layer.built for layer in model._flatten_layers()) or unbuilt(
            getattr(model, "_compile_metrics", None)) or unbuilt(getattr(model, "_compile_loss", None))
        if needs_data and iterator is not None:  # a built model reads no batch (a new iterator reshuffles)
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(local, next(it))
                break
        with strategy.scope():
            if needs_data:
                model._symbolic_build(data_batch=data_batch)
            elif model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)

    def vector_logs(step):
        def wrapped(data):
            return tf.nest.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, step(data))
        return wrapped

    # instance attributes: they replace Keras' methods for this model only
    model._maybe_symbolic_build = build
    model.train_step = vector_logs(model.train_step)
    model.test_step = vector_logs(model.test_step)
    return model


def set_precision(policy: str) -> None:
    """float32, mixed_float16 or mixed_bfloat16 for the layers; samplers keep float32 schedules."""
    keras.mixed_precision.set_global_policy(policy)
