"""The pip package: the wheel holds ldseg_suite only, and `ldseg-suite` / `python -m ldseg_suite` are run.py's CLI."""
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the checkout (the build must not leave build/ or *.egg-info in the repo)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", "LICENSE", "run.py"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("ldseg_suite", "tests", "cfg", "scripts"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    for name in ("data", "weights"):  # stand-ins: the real folders are tens of MB
        (src / name / "demo").mkdir(parents=True)
        (src / name / "demo" / "x.weights.h5").write_bytes(b"0" * 16)
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                 "--wheel-dir", tmp / "dist", src], cwd=tmp, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list((tmp / "dist").glob("ldseg_suite-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_holds_the_package_only(wheel):
    import ldseg_suite

    assert wheel.name == f"ldseg_suite-{ldseg_suite.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    packages = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "ldseg_suite").rglob("__init__.py"))
    assert len(packages) >= 8
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, pkg
    for module in ("ldseg_suite/cli.py", "ldseg_suite/__main__.py", "ldseg_suite/config.py",
                   "ldseg_suite/tasks/ldseg.py", "ldseg_suite/viz/report.py"):
        assert module in names, module
    top = {n.split("/")[0] for n in names}
    assert top == {"ldseg_suite", f"ldseg_suite-{ldseg_suite.__version__}.dist-info"}, top
    assert not [n for n in names if n.endswith((".h5", ".keras", ".ini", ".nii.gz", ".png"))]
    info = f"ldseg_suite-{ldseg_suite.__version__}.dist-info"
    entry = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "ldseg-suite = ldseg_suite.cli:main" in entry
    meta = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "Requires-Python: >=3.11" in meta
    for dep in ("tensorflow<2.22,>=2.21", "keras<4,>=3.15.1", "nibabel<6,>=5.4"):
        assert f"Requires-Dist: {dep}" in meta, dep
    assert "Provides-Extra: dev" in meta


def test_installed_console_script_and_module_have_run_py_cli(wheel, tmp_path):
    venv = tmp_path / "venv"
    proc = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps",
                 wheel], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Outside the checkout, the package comes from the venv's site-packages.
    where = _run([venv / "bin" / "python", "-c", "import ldseg_suite; print(ldseg_suite.__file__)"], cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv)), where.stdout + where.stderr

    reference = _run([sys.executable, ROOT / "run.py", "--help"], cwd=ROOT)
    assert reference.returncode == 0 and "--cfg" in reference.stdout and "--overwrite" in reference.stdout
    for cmd, cwd in (([venv / "bin" / "ldseg-suite", "--help"], tmp_path),
                     ([venv / "bin" / "python", "-m", "ldseg_suite", "--help"], tmp_path),
                     ([sys.executable, "-m", "ldseg_suite", "--help"], ROOT)):
        proc = _run(cmd, cwd=cwd)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == reference.stdout, cmd

    # From a checkout, the installed command reads the shipped configs by their relative paths
    # (a bad override is rejected before TensorFlow loads: exit code 2 and one line naming the key).
    proc = _run([venv / "bin" / "ldseg-suite", "--cfg", "cfg/glas.ini", "--set", "Sampler.Sampling_Step=3"],
                cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --set Sampler.Sampling_Step=3: unknown key 'Sampling_Step' in [Sampler] (did you mean "
        "'Sampling_Steps'?)"]


@pytest.mark.parametrize("user_setting, expected", [(None, "True"), ("0", "False")])
def test_importing_the_package_turns_on_onednn_unless_the_user_chose(user_setting, expected):
    """TensorFlow leaves its oneDNN kernels off on AVX2-only CPUs (2.6x slower 3D windows there); ldseg_suite turns
    them on when imported first, and an explicit TF_ENABLE_ONEDNN_OPTS=0 wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_ENABLE_ONEDNN_OPTS")}
    if user_setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_setting
    code = ("import os, ldseg_suite; from tensorflow.python.util import _pywrap_util_port as p; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], p.IsMklEnabled())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    setting, mkl = proc.stdout.split()[-2:]
    assert setting == (user_setting or "1")
    if platform.machine().lower() in ("x86_64", "amd64"):  # TensorFlow's x86 wheels carry oneDNN; others may not
        assert mkl == expected
