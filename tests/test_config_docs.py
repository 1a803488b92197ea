"""docs/configs.md is generated from the schemas, up to date, and documents every key of every shipped config."""
import configparser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_config_docs.py"
DOC = ROOT / "docs" / "configs.md"


def _script():
    spec = importlib.util.spec_from_file_location("make_config_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parse_doc(text: str):
    """{method: {section (lower): anchor}} from the methods table, {anchor: {key}} from the section tables."""
    methods, keys, anchor = {}, {}, None
    for line in text.splitlines():
        row = re.match(r"\| `(\w+)` \| (\[.*\)) \|", line)
        if row and anchor is None:
            methods[row.group(1)] = {s.lower(): a for s, a in re.findall(r"\[(\w+)\]\(#([\w-]+)\)", row.group(2))}
            continue
        m = re.match(r'<a id="([\w-]+)"></a>', line)
        if m:
            anchor = m.group(1)
            keys[anchor] = set()
            continue
        m = re.match(r"\| `(\w+)` \|", line)
        if m and anchor is not None:
            keys[anchor].add(m.group(1))
    return methods, keys


def test_committed_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout


def test_check_fails_with_one_line_on_a_stale_file(tmp_path, monkeypatch, capsys):
    script = _script()
    stale = tmp_path / "docs" / "configs.md"
    monkeypatch.setattr(script, "ROOT", tmp_path)
    monkeypatch.setattr(script, "OUT", stale)
    assert script.main(["--check"]) == 1  # missing
    stale.parent.mkdir()
    stale.write_text(script.render().replace("| `Seed` |", "| `Sead` |"))
    assert script.main(["--check"]) == 1  # edited by hand
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["docs/configs.md is out of date: run python scripts/make_config_docs.py"] * 2
    assert script.main([]) == 0 and script.main(["--check"]) == 0


def test_every_key_of_every_shipped_config_is_documented_in_its_method_section():
    methods, keys = _parse_doc(DOC.read_text())
    assert {"ldseg", "vae", "lsd_ebm", "mgdcr", "tpdm"} <= set(methods)
    assert len(keys) >= 30 and sum(map(len, keys.values())) >= 150
    configs = sorted((ROOT / "cfg").glob("*.ini"))
    assert len(configs) >= 20
    checked, missing = 0, []
    for path in configs:
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
        parser.optionxform = str
        parser.read(path)
        method = next(v.strip() for s in parser.sections() if s.lower() == "run"
                      for k, v in parser[s].items() if k.lower() == "method")
        for section in parser.sections():
            anchor = methods[method].get(section.lower())
            documented = {k.lower() for k in keys.get(anchor, ())}
            for key in parser[section]:
                checked += 1
                if key.lower() not in documented:
                    missing.append(f"{path.name}: [{section}] {key}")
    assert not missing, missing
    assert checked > 200


def test_entries_carry_type_default_range_choices_and_help():
    text = DOC.read_text()
    assert "| `Seed` | int | `0` | >= 0 | seeds the split" in text
    assert "| `Method` | str | **required** |" in text
    assert re.search(r"\| `Scheduler` \| str \| `linear` \| `linear` \\\| `cosine` \|", text)
    assert re.search(r"\| `Split` \| list of float \| `0.7, 0.1, 0.2` \| 0.0 \.\. 1.0; 3 values \| train, val", text)
