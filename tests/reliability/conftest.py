import pytest

from tests.configs import tiny_ini, write_glas


@pytest.fixture
def tiny(tmp_path):
    """(config path, data root) of a tiny GlaS-named data set."""
    root = write_glas(tmp_path / "data")
    cfg = tmp_path / "tiny.ini"
    cfg.write_text(tiny_ini(root))
    return cfg, root
