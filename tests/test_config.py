import subprocess
import sys
from pathlib import Path

import pytest

from ldseg_suite import config, sections
from ldseg_suite.errors import LDSegError

ROOT = Path(__file__).resolve().parents[1]
GLAS = (ROOT / "cfg" / "glas.ini").read_text()


def parse(text=GLAS, overrides=()):
    return config.parse(text, "test.ini", sections.schema_for("ldseg", "test.ini"), overrides)


def test_glas_config_types_and_values():
    cfg = parse()
    assert cfg.Data.Size == (64, 64) and isinstance(cfg.Data.Size[0], int)
    assert cfg.Sampler.Sampler == "DDIM" and cfg.Sampler.Sampling_Steps == 15
    assert cfg.NoiseScheduler.Beta_T == pytest.approx(0.02)
    assert cfg.Data.Binarize is True


def test_override_and_case_insensitive_choice():
    cfg = parse(overrides=["Training.Epochs=3", "sampler.sampler=ddpm", "NoiseScheduler.Scheduler=cosine"])
    assert cfg.Training.Epochs == 3 and cfg.Sampler.Sampler == "DDPM"
    assert cfg.NoiseScheduler.Scheduler == "cosine"


@pytest.mark.parametrize("change, needle", [
    (("Sampling_Steps = 15", "Sampling_Stepz = 15"), "did you mean 'Sampling_Steps'"),
    (("[Sampler]", "[Samplr]"), "did you mean 'Sampler'"),
    (("Sampling_Steps = 15", "Sampling_Steps = 1.5"), "[Sampler] Sampling_Steps = 1.5: expected an integer"),
    (("Sampling_Steps = 15", "Sampling_Steps = ten"), "expected an integer"),
    (("Sampling_Steps = 15", "Sampling_Steps = 0"), "expected a value >= 1"),
    (("Scheduler = linear", "Scheduler = cosinus"), "expected one of linear, cosine"),
    (("Augment = true", "Augment = maybe"), "expected true or false"),
    (("Split = 0.7, 0.1, 0.2", "Split = 0.7, 0.2, 0.2"), "must sum to 1"),
    (("Beta_0 = 0.0001", "Beta_0 = 0.05"), "must be smaller than Beta_T"),
    (("Size = 64, 64", "Size = 64, 64, 64"), "Kind = 2d needs 2"),
    (("Size = 64, 64", "Size = 62, 62"), "divisible"),
    (("Sampling_Steps = 15", "Sampling_Steps = 5000"), "exceeds [NoiseScheduler] Timesteps"),
    (("Root = data/glas\n", ""), "[Data] Root is required"),
])
def test_every_error_class_names_the_problem(change, needle):
    with pytest.raises(LDSegError) as exc:
        parse(GLAS.replace(*change))
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_method(tmp_path):
    path = tmp_path / "m.ini"
    path.write_text(GLAS.replace("Method = ldseg", "Method = ldsegg"))
    with pytest.raises(LDSegError, match="unknown method.*did you mean 'ldseg'"):
        config.load(path, sections.schema_for)


def test_bad_override_syntax():
    with pytest.raises(LDSegError, match="expected SECTION.KEY=VALUE"):
        parse(overrides=["Epochs=3"])
    with pytest.raises(LDSegError, match=r"--set Training.Epochz=3: unknown key"):
        parse(overrides=["Training.Epochz=3"])


def test_resolved_config_round_trips(tmp_path):
    cfg = parse(overrides=["Training.Epochs=7"])
    cfg.write(tmp_path / "config.ini")
    again = config.parse((tmp_path / "config.ini").read_text(), "x", cfg.schema)
    assert again.Training.Epochs == 7 and again.Data == cfg.Data and again.Sampler == cfg.Sampler


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_missing_config_exits_2_with_one_line():
    r = _cli("--cfg", "cfg/missing.ini")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "cfg/missing.ini: config file not found" in r.stderr


def test_cli_bad_key_and_type_exit_2(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text(GLAS.replace("Sampling_Steps = 15", "Sampling_Steps = abc"))
    r = _cli("--cfg", str(bad), "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and "[Sampler] Sampling_Steps = abc: expected an integer" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "\nEpochs = " in GLAS
    bad.write_text(GLAS.replace("\nEpochs = ", "\nEpocs = "))
    r = _cli("--cfg", str(bad), "--out", str(tmp_path / "never"))
    assert r.returncode == 2 and "unknown key 'Epocs' in [Training] (did you mean 'Epochs'?)" in r.stderr
