"""Read an .ini file into frozen, typed dataclasses, one per section.

Every section is a frozen dataclass whose field names are the .ini keys (the anchor's vocabulary:
``[NoiseScheduler] Beta_0``, ``[Sampler] Sampling_Steps`` ...). A field's ``metadata`` holds its checks:
``choices``, ``min``, ``max``, ``length`` (tuples) and ``help``. A method's schema is the mapping of
section name to dataclass (see ``ldseg_suite.schemas``). Unknown sections or keys, wrong types,
out-of-range values and contradictory values raise :class:`LDSegError` with one line that names the
file, section, key, the value and what was expected.
"""
from __future__ import annotations

import configparser
import dataclasses
import difflib
import io
import typing
from pathlib import Path

from ldseg_suite.errors import LDSegError

_MISSING = dataclasses.MISSING


def field(default=_MISSING, *, help="", choices=None, min=None, max=None, length=None):
    """A config key: default (omit for a required key) and its checks."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "length": length}
    if isinstance(default, (list, tuple)):
        default = tuple(default)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Schema:
    """A method's config layout: {section name: dataclass}, plus checks across sections."""

    sections: dict
    validate: typing.Callable | None = None  # validate(cfg) raises LDSegError on contradictions


class Config:
    """A parsed config: ``cfg.Data.Root``; ``cfg.source`` is the file it came from."""

    def __init__(self, sections: dict, source: str, schema: Schema):
        self._sections = dict(sections)
        self.source = source
        self.schema = schema

    def __getattr__(self, name):
        try:
            return self._sections[name]
        except KeyError:
            raise AttributeError(name) from None

    def __contains__(self, name):
        return name in self._sections

    def replace(self, section: str, **values) -> "Config":
        """A copy with ``values`` set in ``section``."""
        sections = {**self._sections, section: dataclasses.replace(self._sections[section], **values)}
        return Config(sections, self.source, self.schema)

    def to_ini(self) -> str:
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str
        for name, sec in self._sections.items():
            parser[name] = {f.name: _format(getattr(sec, f.name)) for f in dataclasses.fields(sec)}
        buf = io.StringIO()
        buf.write(f"# resolved from {self.source}\n")
        parser.write(buf)
        return buf.getvalue()

    def write(self, path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_ini())
        tmp.replace(path)


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(_format(v) for v in value)
    return str(value)


def _closest(name: str, options) -> str:
    options = list(options)
    lower = {o.lower(): o for o in options}
    match = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.5)
    return f" (did you mean '{lower[match[0]]}'?)" if match else f" (valid: {', '.join(options)})"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _describe(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"a comma-separated list of {_describe(typing.get_args(tp)[0])}s"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


def _convert(raw: str, tp):
    raw = raw.strip()
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        parts = [p for p in raw.replace(";", ",").split(",") if p.strip()]
        return tuple(_convert(p, inner) for p in parts)
    if tp is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ValueError(raw)
    if tp is int:
        value = float(raw)
        if not value.is_integer():
            raise ValueError(raw)
        if "." in raw or "e" in raw.lower():
            raise ValueError(raw)
        return int(raw)
    if tp is float:
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(raw)
        return value
    return raw


def _check(where: str, f: dataclasses.Field, value):
    meta = f.metadata
    values = value if isinstance(value, tuple) else (value,)
    if meta.get("length") is not None:
        lengths = meta["length"] if isinstance(meta["length"], tuple) else (meta["length"],)
        if len(value) not in lengths:
            want = " or ".join(str(n) for n in lengths)
            raise LDSegError(f"{where} = {_format(value)}: expected {want} values, got {len(value)}")
    for v in values:
        if meta.get("choices") is not None and v not in meta["choices"]:
            hint = _closest(str(v), meta["choices"]) if isinstance(v, str) else ""
            hint = hint if hint.startswith(" (did") else ""
            raise LDSegError(f"{where} = {v}: expected one of {', '.join(map(str, meta['choices']))}{hint}")
        if meta.get("min") is not None and v < meta["min"]:
            raise LDSegError(f"{where} = {v}: expected a value >= {meta['min']}")
        if meta.get("max") is not None and v > meta["max"]:
            raise LDSegError(f"{where} = {v}: expected a value <= {meta['max']}")


def _canonical_choice(f: dataclasses.Field, value):
    """Match a string choice case-insensitively (DDIM == ddim) and return the canonical spelling."""
    choices = f.metadata.get("choices")
    if not choices or not isinstance(value, str):
        return value
    for c in choices:
        if isinstance(c, str) and c.lower() == value.lower():
            return c
    return value


def parse(text: str, source: str, schema: Schema, overrides: typing.Sequence[str] = ()) -> Config:
    """Parse .ini text against a schema {section: dataclass}; overrides are 'Section.Key=Value'."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise LDSegError(f"{source}: not a valid .ini file: {first}") from None

    sections = {name.lower(): name for name in schema.sections}
    raw: dict[str, dict[str, tuple[str, str]]] = {name: {} for name in schema.sections}

    def put(sec_name: str, key: str, value: str, origin: str):
        sec = sections.get(sec_name.lower())
        if sec is None:
            raise LDSegError(f"{origin}: unknown section [{sec_name}]" + _closest(sec_name, schema.sections))
        keys = {f.name.lower(): f.name for f in dataclasses.fields(schema.sections[sec])}
        canon = keys.get(key.lower())
        if canon is None:
            raise LDSegError(f"{origin}: unknown key '{key}' in [{sec}]" + _closest(key, keys.values()))
        raw[sec][canon] = (value, origin)

    for sec_name in parser.sections():
        for key, value in parser[sec_name].items():
            put(sec_name, key, value, source)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise LDSegError(f"--set {item}: expected SECTION.KEY=VALUE, e.g. Training.Epochs=2")
        lhs, value = item.split("=", 1)
        sec_name, key = lhs.split(".", 1)
        put(sec_name.strip(), key.strip(), value, f"--set {item}")

    built = {}
    for sec, cls in schema.sections.items():
        values = {}
        for f in dataclasses.fields(cls):
            where_src = raw[sec].get(f.name, (None, source))[1]
            where = f"{where_src}: [{sec}] {f.name}"
            if f.name not in raw[sec]:
                if f.default is _MISSING:
                    what = f.metadata.get("help") or _describe(f.type)
                    raise LDSegError(f"{source}: [{sec}] {f.name} is required ({what})")
                values[f.name] = f.default
                continue
            text_value = raw[sec][f.name][0]
            tp = typing.get_type_hints(cls)[f.name]
            try:
                value = _convert(text_value, tp)
            except ValueError:
                raise LDSegError(f"{where} = {text_value.strip()}: expected {_describe(tp)}") from None
            if isinstance(value, tuple):
                value = tuple(_canonical_choice(f, v) for v in value)
            else:
                value = _canonical_choice(f, value)
            _check(where, f, value)
            values[f.name] = value
        section = cls(**values)
        check = getattr(section, "validate", None)
        if check is not None:
            try:
                check()
            except LDSegError as exc:
                raise LDSegError(f"{source}: [{sec}] {exc}") from None
        built[sec] = section
    cfg = Config(built, source, schema)
    if schema.validate is not None:
        try:
            schema.validate(cfg)
        except LDSegError as exc:
            raise LDSegError(f"{source}: {exc}") from None
    return cfg


def load(path, schema_for, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a config file. ``schema_for(method)`` returns the schema of the file's [Run] Method."""
    path = Path(path)
    if not path.is_file():
        raise LDSegError(f"{path}: config file not found (expected an .ini file, e.g. cfg/glas.ini)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise LDSegError(f"{path}: cannot read config file ({exc.__class__.__name__})") from None
    method = _peek_method(text, str(path), overrides)
    return parse(text, str(path), schema_for(method, str(path)), overrides)


def _peek_method(text: str, source: str, overrides) -> str:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise LDSegError(f"{source}: not a valid .ini file: {str(exc).strip().splitlines()[0]}") from None
    method = None
    for sec in parser.sections():
        if sec.lower() == "run":
            for key, value in parser[sec].items():
                if key.lower() == "method":
                    method = value.strip()
    for item in overrides:
        if item.lower().startswith("run.method="):
            method = item.split("=", 1)[1].strip()
    if method is None:
        raise LDSegError(f"{source}: [Run] Method is required (e.g. Method = ldseg)")
    return method
