"""--shard K/N: parsing, case selection (every case exactly once over N shards) and merging of shard tables."""
import numpy as np
import pandas as pd
import pytest

from ldseg_suite.errors import LDSegError
from ldseg_suite.inference import shard


@pytest.mark.parametrize("text, expected", [("0/1", (0, 1)), ("0/2", (0, 2)), ("1/2", (1, 2)), (" 3 / 4 ", (3, 4))])
def test_parse_shard(text, expected):
    assert shard.parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "1/0", "0/0", "-1/2", "1", "a/b", "1/2/3", "", "1.0/2"])
def test_bad_shard_is_one_line_error(text):
    with pytest.raises(LDSegError) as err:
        shard.parse_shard(text)
    message = str(err.value)
    assert message.startswith(f"--shard {text}:") and "K/N" in message and "\n" not in message


@pytest.mark.parametrize("count, n", [(0, 3), (1, 2), (6, 2), (7, 3), (10, 4), (5, 8)])
def test_select_covers_every_item_exactly_once(count, n):
    items = [f"case_{i:02d}" for i in range(count)]
    parts = [shard.select(items, k, n) for k in range(n)]
    flat = [x for p in parts for x in p]
    assert sorted(flat) == items and len(flat) == count  # each once, none lost
    for k, part in enumerate(parts):  # case i goes to shard i mod N
        assert part == [items[i] for i in range(count) if i % n == k]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    with pytest.raises(LDSegError):
        shard.select(items, n, n)


def test_table_names():
    assert shard.table_name("predict.csv", 1, 3) == "predict.shard-1-of-3.csv"
    assert shard.protected_outputs(["predictions", "metrics.csv"], (0, 2)) == ["metrics.shard-0-of-2.csv"]
    assert shard.protected_outputs(["predictions", "metrics.csv"], None) == ["predictions", "metrics.csv"]


def _metrics(names, rng):
    rows = [{"case": n, "dice": rng.random(), "iou": rng.random(), "hd95": float(i)} for i, n in enumerate(names)]
    table = pd.DataFrame(rows)
    mean = {"case": "mean", **table.drop(columns="case").mean()}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True)


def test_merge_waits_for_all_shards_then_equals_the_union(tmp_path):
    names = [f"img{i}" for i in range(1, 12)]  # natural order: img2 before img10
    rng = np.random.default_rng(0)
    whole = _metrics(names, rng)
    n = 3
    written = []
    for k in (2, 0, 1):  # shards finish in any order
        part = whole[whole.case.isin(shard.select(names, k, n))].reset_index(drop=True)
        part = pd.concat([part, pd.DataFrame([{"case": "mean", **part.drop(columns="case").mean()}])])
        written.append(shard.write_table(part, tmp_path, "metrics.csv", (k, n)))
        assert (tmp_path / "metrics.csv").is_file() == (len(written) == n)
    assert written[-1] == tmp_path / "metrics.csv"
    merged = pd.read_csv(tmp_path / "metrics.csv", dtype={"case": str})
    assert merged.case.tolist() == names + ["mean"]  # every case once, in the cohort order, mean last
    expected = pd.read_csv(_csv(whole, tmp_path / "one.csv"), dtype={"case": str})
    np.testing.assert_allclose(merged.iloc[:-1, 1:].to_numpy(), expected.iloc[:-1, 1:].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(merged.iloc[-1, 1:].to_numpy(float), expected.iloc[-1, 1:].to_numpy(float),
                               atol=1e-4)  # recomputed from the 4-decimal shard values


def _csv(frame, path):
    frame.to_csv(path, index=False, float_format="%.4f")
    return path


def test_merge_keeps_text_columns_and_explicit_order(tmp_path):
    order = ["b", "NA", "a", "c"]  # a case called NA stays a name
    rows = [{"case": c, "input": f"/x/{c}.png", "status": "ok", "message": "" if c != "a" else "bad: x"}
            for c in order]
    for k in range(2):
        part = pd.DataFrame([r for r in rows if r["case"] in shard.select(order, k, 2)])
        shard.write_table(part, tmp_path, "predict.csv", (k, 2), order=order)
    merged = pd.read_csv(tmp_path / "predict.csv", dtype=str, keep_default_na=False)
    assert merged.to_dict("records") == rows


def test_merge_refuses_mixed_shard_counts(tmp_path):
    pd.DataFrame({"case": ["a"]}).to_csv(tmp_path / "predict.shard-0-of-2.csv", index=False)
    pd.DataFrame({"case": ["b"]}).to_csv(tmp_path / "predict.shard-0-of-3.csv", index=False)
    with pytest.raises(LDSegError, match="different shard counts"):
        shard.merge_tables(tmp_path, "predict.csv")
    assert shard.merge_tables(tmp_path, "predict.csv", n=2) is None  # shard 1 of 2 is missing


def test_merge_command_for_tables_copied_from_several_machines(tmp_path, capsys):
    for k in range(2):
        pd.DataFrame({"case": [f"c{k}"], "seconds": [0.5]}).to_csv(tmp_path / f"predict.shard-{k}-of-2.csv",
                                                                   index=False)
    pd.DataFrame({"case": ["c0"]}).to_csv(tmp_path / "metrics.shard-0-of-2.csv", index=False)
    assert shard.main([str(tmp_path)]) == 2  # metrics shard 1 of 2 is missing
    assert "not all shards present" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "predict.csv").case.tolist() == ["c0", "c1"]
    assert shard.main([str(tmp_path / "nowhere")]) == 2


def test_two_shard_processes_predict_every_case_once_like_one_process(tmp_path):
    """`--mode predict --shard 0/2` and `1/2` run at once into one --out: every case once, the same masks and
    table as one process (untrained weights: the outputs still depend on every weight and on the seeds)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import imageio.v3 as iio

    from ldseg_suite import config, sections, training
    from ldseg_suite.data import synthetic
    from ldseg_suite.tasks import ldseg
    from tests.configs import tiny_ini, write_glas

    root_dir = Path(__file__).resolve().parents[2]
    data = write_glas(tmp_path / "data", n=4, size=16)
    inputs = tmp_path / "new_scans"
    inputs.mkdir()
    for k, (rgb, _) in enumerate(synthetic.make_glands(7, 20, seed=5)):
        iio.imwrite(inputs / f"scan{k + 1}.png", rgb)  # natural order: scan2 before scan10-like names
    cfg_path = tmp_path / "tiny.ini"

    def predict_cfg(weights=None):  # untrained LDSeg without [Training]; Weights given once exported
        return tiny_ini(data, Data={"Binarize": None, "Split": None}, Training=None,
                        Model={"ImageLatentChannels": 2, "Attention": "false"}, Sampler={"Sampling_Steps": 2},
                        Output={"Weights": weights})

    cfg_path.write_text(predict_cfg())
    weights = training.export_weights(ldseg.build_model(config.load(cfg_path, sections.schema_for)),
                                      tmp_path / "w.weights.h5")
    cfg_path.write_text(predict_cfg(weights))
    env = {**os.environ, "PYTHONPATH": str(root_dir), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}

    def start(out, *extra):
        return subprocess.Popen(["timeout", "-s", "KILL", "600", sys.executable, "run.py", "--cfg", str(cfg_path),
                                 "--mode", "predict", "--input", str(inputs), "--out", str(out), *extra],
                                cwd=root_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [start(tmp_path / "one"), start(tmp_path / "sharded", "--shard", "0/2"),
             start(tmp_path / "sharded", "--shard", "1/2")]
    try:
        outs = [p.communicate(timeout=610)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0, 0], "\n----\n".join(o[-2000:] for o in outs)

    one, sharded = tmp_path / "one", tmp_path / "sharded"
    names = sorted(p.name for p in (one / "predictions").iterdir())
    assert len(names) == 7 and sorted(p.name for p in (sharded / "predictions").iterdir()) == names
    for name in names:  # the same masks, byte for byte
        assert (one / "predictions" / name).read_bytes() == (sharded / "predictions" / name).read_bytes(), name
    parts = [pd.read_csv(sharded / f"predict.shard-{k}-of-2.csv", dtype=str) for k in range(2)]
    assert [len(p) for p in parts] == [4, 3]  # scan1, 3, 5, 7 | scan2, 4, 6
    assert sorted(parts[0].case.tolist() + parts[1].case.tolist()) == sorted(f"scan{k}" for k in range(1, 8))
    merged = pd.read_csv(sharded / "predict.csv", dtype=str, keep_default_na=False).drop(columns="seconds")
    single = pd.read_csv(one / "predict.csv", dtype=str, keep_default_na=False).drop(columns="seconds")
    assert merged.case.tolist() == [f"scan{k}" for k in range(1, 8)]  # every case exactly once, in order
    pd.testing.assert_frame_equal(merged, single)
    assert sum("merged" in o for o in outs[1:]) >= 1  # the shard that finished last merged the tables
