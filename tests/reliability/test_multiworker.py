"""Two worker processes of the real CLI on 127.0.0.1 (MultiWorkerMirroredStrategy) train like one process.

Each worker runs ``python run.py --cfg tiny.ini --mode train`` with its own ``TF_CONFIG``. A ``sitecustomize``
hook (test only, on PYTHONPATH) makes LDSeg's training noise a function of each example, as
test_distribute.py does for Mirrored, so a replica draws what a single process draws; logs a fingerprint
(pixel sum) of every training example each step; dumps each worker's final weights; and can slow the steps
so a worker can be killed mid-epoch.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.configs import tiny_ini, write_glas

ROOT = Path(__file__).resolve().parents[2]


def config(root, epochs, strategy):
    """The tiny LDSeg config, no augmentation, 4 of 5 cases for training; EMA and clipping off: Keras 3 clips
    gradients per replica, before the all-reduce, so the equality needs clipping off (docs/scale-out.md)."""
    return tiny_ini(root, Data={"Augment": "false", "Split": "0.8, 0, 0.2"},
                    Model={"ImageLatentChannels": 2, "Attention": "false"}, Sampler=None,
                    Training={"Epochs": epochs, "BatchSize": 4, "LearningRate": "1e-3", "EMA": 0, "ClipNorm": 0,
                              "RunEagerly": "false"},
                    Distribute={"Strategy": strategy})


HOOK = r'''
import os
if os.environ.get("MW_HOOK_DIR"):
    import json
    import time

    import numpy as np
    import tensorflow as tf
    from keras import ops

    from ldseg_suite import training
    from ldseg_suite.models import ldseg

    out = os.environ["MW_HOOK_DIR"]
    conf = json.loads(os.environ.get("TF_CONFIG") or '{"task": {"index": "single"}}')
    tag = str(conf["task"]["index"])
    if "cluster" in conf:  # a generous heartbeat: a worker starved of CPU by other jobs is not taken for dead
        from tensorflow.python.distribute import collective_all_reduce_strategy as mwms
        from tensorflow.python.eager import context

        job = mwms.coordination_config_pb2.CoordinatedJob(name="worker", num_tasks=len(conf["cluster"]["worker"]))
        context.context().configure_coordination_service(
            "standalone", "/job:worker/replica:0/task:0", heartbeat_timeout_in_ms=120000, coordinated_jobs=[job])

    def sample_t_and_noise(self, image, latent_shape):
        tf.print(ops.sum(image, axis=(1, 2, 3)), summarize=-1, output_stream=f"file://{out}/seen-{tag}.log")
        t = ops.cast(ops.mean(image, axis=(1, 2, 3)) * (self.hp["timesteps"] - 1), "int32")
        pooled = ops.average_pool(image, 2, 2)[..., :1]
        channels = ops.reshape(ops.arange(latent_shape[-1], dtype="float32"), (1, 1, 1, -1))
        return t, ops.sin(37.0 * pooled + channels)

    ldseg.LDSeg.sample_t_and_noise = sample_t_and_noise
    fit = training.fit

    def dumping_fit(*args, **kwargs):
        model = fit(*args, **kwargs)
        np.savez(f"{out}/weights-{tag}.npz", *model.get_weights())
        return model

    training.fit = dumping_fit
    save = training.save_checkpoint

    def dumping_save(model, ckpt_dir, epoch, *args, **kwargs):
        np.savez(f"{out}/weights-{tag}-epoch{epoch}.npz", *model.get_weights())
        return save(model, ckpt_dir, epoch, *args, **kwargs)

    training.save_checkpoint = dumping_save
    pause = float(os.environ.get("MW_SLEEP", "0"))
    if pause:
        after = training.NaNGuard.on_train_batch_end

        def slow(self, batch, logs=None):
            after(self, batch, logs)
            if self.epoch >= int(os.environ.get("MW_SLOW_FROM", "1")):  # slow down from this epoch (0-based)
                time.sleep(pause)

        training.NaNGuard.on_train_batch_end = slow
'''

N_CASES = 10  # split 0.8 / 0 / 0.2 -> 8 training cases = 2 global batches of 4 per epoch


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("mw")
    root = write_glas(base / "data", n=N_CASES, size=16)
    hook = base / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    return base, root, hook


def env_for(hook, logs, tf_config=None, sleep=0.0, slow_from=1):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=f"{hook}{os.pathsep}{ROOT}", MW_HOOK_DIR=str(logs), MW_SLEEP=str(sleep),
               MW_SLOW_FROM=str(slow_from),
               CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", OMP_NUM_THREADS="1")
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def start_workers(base, hook, logs, cfg, out, ports, sleep=0.0, slow_from=1):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = env_for(hook, logs, {"cluster": cluster, "task": {"type": "worker", "index": i}}, sleep, slow_from)
        log = open(base / f"{out.name}-worker{i}.out", "a")
        procs.append(subprocess.Popen(
            ["timeout", "-s", "KILL", "600", sys.executable, "run.py", "--cfg", str(cfg), "--mode", "train", "--out",
             str(out)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def stop(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_all(procs, limit):
    deadline = time.time() + limit
    for p in procs:
        p.wait(timeout=max(1, deadline - time.time()))
    return [p.returncode for p in procs]


def seen(logs, tag):
    """Fingerprints logged per step by one worker: a list of per-step lists."""
    text = (logs / f"seen-{tag}.log").read_text().split("\n")
    return [[round(float(v), 2) for v in line.strip(" []").split()] for line in text if line.strip()]


def h5_arrays(path):
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.append((name, obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return dict(arrays)


@pytest.fixture(scope="module")
def runs(setup):
    """Two workers train 2 epochs while one process trains 1 on the same global batches; worker 1 is killed in
    epoch 2; both workers are restarted with the same command and finish. Returns (base, outputs)."""
    base, root, hook = setup
    single_cfg, mw_cfg = base / "single.ini", base / "mw.ini"
    single_cfg.write_text(config(root, epochs=1, strategy="none"))
    mw_cfg.write_text(config(root, epochs=2, strategy="multiworker"))
    single_logs, mw_logs, single_out, out = base / "single_logs", base / "mw_logs", base / "single_run", base / "mw_run"
    single_logs.mkdir()
    mw_logs.mkdir()
    ports = free_ports(2)
    latest, other_latest = out / "checkpoints" / "latest.json", out / ".worker-1" / "checkpoints" / "latest.json"

    def epoch(path):
        return json.loads(path.read_text())["epoch"] if path.is_file() else 0

    procs = start_workers(base, hook, mw_logs, mw_cfg, out, ports, sleep=1.0, slow_from=1)
    single = subprocess.Popen(["timeout", "-s", "KILL", "600", sys.executable, "run.py", "--cfg", str(single_cfg),
                               "--mode", "train", "--out", str(single_out)], cwd=ROOT, env=env_for(hook, single_logs),
                              stdout=open(base / "single.out", "w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.time() + 600
        while min(epoch(latest), epoch(other_latest)) < 1 and time.time() < deadline and all(
                p.poll() is None for p in procs):
            time.sleep(0.1)
        assert epoch(latest) == epoch(other_latest) == 1, (base / "mw_run-worker0.out").read_text()[-3000:]
        time.sleep(0.5)  # into epoch 2 (1 s per step from there on)
        os.killpg(procs[1].pid, signal.SIGKILL)  # lose worker 1 mid-epoch
        procs[1].wait()
        chief_code = procs[0].wait(timeout=300)  # its next all-reduce fails: one line, exit code 2
        first = [(base / f"mw_run-worker{i}.out").read_text() for i in range(2)]
        latest_after_kill, kept = epoch(latest), (out / ".worker-1").is_dir()
        procs = start_workers(base, hook, mw_logs, mw_cfg, out, ports)  # the same command again
        single.wait(timeout=600)
        codes = wait_all(procs, 600)
    finally:
        stop(procs + [single])
    assert single.returncode == 0, (base / "single.out").read_text()[-3000:]
    outs = [(base / f"mw_run-worker{i}.out").read_text()[len(first[i]):] for i in range(2)]
    assert codes == [0, 0], "\n----\n".join(o[-3000:] for o in outs)
    return base, dict(single_logs=single_logs, mw_logs=mw_logs, single_out=single_out, out=out, first=first,
                      outs=outs, chief_code=chief_code, latest_after_kill=latest_after_kill, kept=kept)


def test_two_workers_train_like_one_process_and_only_the_chief_writes(runs):
    _, r = runs
    # every training example once per epoch: the two workers split each global batch of the single run
    one = seen(r["single_logs"], "single")
    w0, w1 = seen(r["mw_logs"], "0")[:2], seen(r["mw_logs"], "1")[:2]  # epoch 1 (2 global steps)
    assert len(one) == 2 and all(len(b) == 4 for b in one)
    assert all(len(b) == 2 for b in w0 + w1)
    per_epoch = sorted(v for b in w0 + w1 for v in b)
    assert len(set(per_epoch)) == 8 == len(per_epoch)  # 8 distinct cases, none twice
    assert per_epoch == sorted(v for b in one for v in b)
    assert [sorted(a + b) for a, b in zip(w0, w1)] == [sorted(b) for b in one]

    # after epoch 1 both workers hold the same weights, equal to the single process on the same global batches
    ref = np.load(r["single_logs"] / "weights-single.npz")
    chief, other = np.load(r["mw_logs"] / "weights-0-epoch1.npz"), np.load(r["mw_logs"] / "weights-1-epoch1.npz")
    assert len(ref.files) == len(chief.files) == len(other.files) > 10
    assert max(float(np.abs(chief[k] - other[k]).max()) for k in chief.files) == 0.0
    assert max(float(np.abs(chief[k] - ref[k]).max()) for k in ref.files) < 1e-5
    assert max(float(np.abs(chief[k] - np.load(r["single_logs"] / "weights-single-epoch1.npz")[k]).max())
               for k in ref.files) < 1e-5

    # only the chief wrote: checkpoints, weights and logs in --out; the other worker's folder is gone
    out = r["out"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001.keras", "epoch_0002.keras",
                                                                       "latest.json"]
    assert (out / "model.weights.h5").is_file() and not list(out.glob(".worker-*"))
    assert "not the chief; writing to" in r["outs"][1] and "not the chief" not in r["outs"][0]
    final0, final1 = np.load(r["mw_logs"] / "weights-0.npz"), np.load(r["mw_logs"] / "weights-1.npz")
    assert max(float(np.abs(final0[k] - final1[k]).max()) for k in final0.files) == 0.0
    assert max(float(np.abs(final0[k] - chief[k]).max()) for k in chief.files) > 1e-4  # epoch 2 trained on


def test_killed_worker_resumes_from_last_complete_epoch(runs):
    """Worker 1 killed in epoch 2: the chief stops with one line (exit 2), worker 1's folder is kept, and both
    restarted with the same command resume from epoch 1 (the chief's checkpoint) and finish epoch 2 only."""
    _, r = runs
    assert r["chief_code"] == 2, r["first"][0][-3000:]
    assert "error: training stopped: another worker was lost" in r["first"][0]
    assert "the last complete checkpoint (epoch 1)" in r["first"][0]
    assert r["latest_after_kill"] == 1 and r["kept"]
    for o in r["outs"]:
        assert f"resuming from {r['out'] / 'checkpoints' / 'epoch_0001.keras'} (completed epochs: 1)" in o
        assert "Epoch 2/2" in o and "Epoch 1/2" not in o
    assert json.loads((r["out"] / "checkpoints" / "latest.json").read_text())["epoch"] == 2


def test_multiworker_roles_folders_and_shard_options(tmp_path, monkeypatch):
    """The pieces the two-process tests rely on, without starting a cluster."""
    import tensorflow as tf

    from ldseg_suite import distribute
    from ldseg_suite.errors import LDSegError

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief() and distribute.worker_dir(tmp_path) == tmp_path
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
    assert distribute.is_chief() and distribute.worker_dir(tmp_path) == tmp_path
    assert distribute.checkpoint_source(tmp_path / "checkpoints") == tmp_path / "checkpoints"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    own = distribute.worker_dir(tmp_path)
    assert not distribute.is_chief() and own == tmp_path / ".worker-1"
    assert distribute.checkpoint_source(own / "checkpoints") == own / "checkpoints"  # the chief has none yet
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest.json").write_text('{"epoch": 1, "file": "epoch_0001.keras"}')
    assert distribute.checkpoint_source(own / "checkpoints") == tmp_path / "checkpoints"  # sees the chief's
    own.mkdir()
    distribute.finish(own)
    assert not own.exists() and tmp_path.exists()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["h:1"], **cluster},
                                                "task": {"type": "worker", "index": 0}}))
    assert not distribute.is_chief()  # a cluster with a chief task: worker 0 is not the chief
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(LDSegError, match="TF_CONFIG: expected JSON"):
        distribute.is_chief()
    policy = tf.data.experimental.AutoShardPolicy
    assert distribute.shard_options(True).experimental_distribute.auto_shard_policy == policy.FILE
    assert distribute.shard_options(False).experimental_distribute.auto_shard_policy == policy.DATA
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(LDSegError, match="needs the TF_CONFIG environment variable"):
        distribute.strategy_for("multiworker")
    assert distribute.agree_on_epoch(tf.distribute.get_strategy(), 3) == 3  # one worker: nothing to agree on
