#!/usr/bin/env python
"""Write docs/configs.md, the reference of every section and key of every method's config schema.

usage: python scripts/make_config_docs.py [--check]
The page is generated from the schemas (ldseg_suite/sections.py, ldseg_suite/tasks/*_schema.py): each key's
type, default, allowed values and help text. --check writes nothing and exits 1 when docs/configs.md differs.
"""
from __future__ import annotations

import argparse
import configparser
import dataclasses
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ldseg_suite import sections  # noqa: E402

OUT = ROOT / "docs" / "configs.md"
SHARED = "ldseg_suite.sections"
ORDER = ("ldseg", "unet", "shape", "generate", "cardiac", "tpdm")  # families in this order, others after


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"list of {_type(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING:
        return "**required**"
    text = _fmt(f.default)
    return f"`{_cell(text)}`" if text else "`''` (empty)"


def _allowed(f: dataclasses.Field) -> str:
    meta, parts = f.metadata, []
    if meta.get("choices") is not None:
        parts.append(" \\| ".join(f"`{_fmt(c)}`" for c in meta["choices"]))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and hi is not None:
        parts.append(f"{_fmt(lo)} .. {_fmt(hi)}")
    elif lo is not None:
        parts.append(f">= {_fmt(lo)}")
    elif hi is not None:
        parts.append(f"<= {_fmt(hi)}")
    if meta.get("length") is not None:
        lengths = meta["length"] if isinstance(meta["length"], tuple) else (meta["length"],)
        parts.append(f"{' or '.join(map(str, lengths))} values")
    return "; ".join(parts)


def _short(module: str) -> str:
    return module.rsplit(".", 1)[-1].removesuffix("_schema")


def _anchor(cls) -> str:
    return f"{_short(cls.__module__)}-{cls.__name__}".lower()


def _home(schema) -> str:
    """The schema module a method belongs to: where its validator or first own section is defined."""
    if schema.validate is not None:
        return schema.validate.__module__
    own = [c.__module__ for c in schema.sections.values() if c.__module__ != SHARED]
    return own[0] if own else SHARED


def _shipped_configs() -> dict[str, list[str]]:
    by_method: dict[str, list[str]] = {}
    for path in sorted((ROOT / "cfg").glob("*.ini")):
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
        parser.optionxform = str
        parser.read(path)
        run = next((parser[s] for s in parser.sections() if s.lower() == "run"), {})
        method = next((v.strip() for k, v in run.items() if k.lower() == "method"), None)
        if method:
            by_method.setdefault(method, []).append(f"cfg/{path.name}")
    return by_method


def _section_table(cls, names: list[str], used_by: list[str]) -> list[str]:
    doc = (cls.__doc__ or "").strip()
    lines = [f'<a id="{_anchor(cls)}"></a>', "", f"### {' / '.join(f'[{n}]' for n in names)}", ""]
    if doc and not doc.startswith(f"{cls.__name__}("):  # dataclasses invent a signature when there is no docstring
        lines += [doc.splitlines()[0], ""]
    lines += [f"Used by: {', '.join(f'`{m}`' for m in used_by)}.", "",
              "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        lines.append(f"| `{f.name}` | {_type(hints[f.name])} | {_default(f)} | {_allowed(f)} | "
                     f"{_cell(f.metadata.get('help', ''))} |")
    return lines + [""]


def render() -> str:
    sections._load_schemas()
    registered = list(sections.METHODS)
    rank = {m: (ORDER.index(_short(_home(s))) if _short(_home(s)) in ORDER else len(ORDER), registered.index(m))
            for m, (s, _) in sections.METHODS.items()}
    methods = {m: sections.METHODS[m] for m in sorted(registered, key=rank.get)}
    shipped = _shipped_configs()
    classes: dict[type, dict] = {}  # class -> {"names": [...], "methods": [...]}, in order of first use
    for method, (schema, _) in methods.items():
        for name, cls in schema.sections.items():
            entry = classes.setdefault(cls, {"names": [], "methods": []})
            if name not in entry["names"]:
                entry["names"].append(name)
            entry["methods"].append(method)
    homes: dict[str, list[str]] = {}
    for method, (schema, _) in methods.items():
        homes.setdefault(_home(schema), []).append(method)

    out = ["# Config reference", "",
           "Generated by `python scripts/make_config_docs.py` from the config schemas (`ldseg_suite/sections.py`, "
           "`ldseg_suite/tasks/*_schema.py`); do not edit by hand, `python scripts/make_config_docs.py --check` "
           "(run by the tests) fails when this page is out of date.", "",
           "A config is an `.ini` file whose `[Run] Method` picks the schema below. Section and key names are "
           "matched case-insensitively; unknown sections or keys, wrong types and values outside the allowed "
           "range are rejected on load with the file, section and key. Lists are comma-separated; `true/false`, "
           "`yes/no`, `on/off` and `1/0` are booleans; choices are case-insensitive. Any key can be overridden "
           "from the command line with `--set SECTION.KEY=VALUE`. The resolved config is written to the run "
           "directory as `config.ini`.", "",
           "## Methods", "", "| method | sections | shipped configs |", "|---|---|---|"]
    for method, (schema, _) in methods.items():
        secs = ", ".join(f"[{name}](#{_anchor(cls)})" for name, cls in schema.sections.items())
        cfgs = ", ".join(f"`{c}`" for c in shipped.get(method, [])) or "none"
        out.append(f"| `{method}` | {secs} | {cfgs} |")
    out.append("")

    modules = [SHARED] + [m for m in homes if m != SHARED]
    modules += sorted({c.__module__ for c in classes} - set(modules))
    for module in modules:
        own = [c for c in classes if c.__module__ == module]
        if module == SHARED:
            out += ["## Shared sections", "", "Sections that several methods use (`ldseg_suite/sections.py`).", ""]
        else:
            names = homes.get(module, [])
            title = ", ".join(names) if names else _short(module)
            doc = (sys.modules[module].__doc__ or "").strip().splitlines()
            out += [f"## {title}", "", f"`{module.replace('.', '/')}.py`" + (f": {doc[0]}" if doc else ""), ""]
        for cls in own:
            out += _section_table(cls, classes[cls]["names"], classes[cls]["methods"])
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/configs.md is not what this script writes")
    args = ap.parse_args(argv)
    text = render()
    rel = OUT.relative_to(ROOT)
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(f"{rel} is out of date: run python scripts/make_config_docs.py", file=sys.stderr)
            return 1
        print(f"{rel} is up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {rel} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
