"""benchmarks/peers.py without torch/MONAI (the suite never installs them): one-line stop, working --help."""
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import peers

ROOT = Path(__file__).resolve().parents[1]


def test_missing_peer_libraries_stop_with_one_line_naming_the_requirements_file(monkeypatch):
    monkeypatch.setattr(peers, "NEEDS", ("torch", "no_such_module_for_peers_test"))
    with pytest.raises(SystemExit) as stop:
        peers.check_needs()
    message = str(stop.value.code)
    assert "\n" not in message and "requirements-bench.txt" in message
    assert "no_such_module_for_peers_test" in message


def test_peers_help_runs_without_torch():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--quick" in out.stdout and "--omp-wait" in out.stdout
