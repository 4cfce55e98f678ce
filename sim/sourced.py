"""Numbers with their sources: the TOML convention every data file in sim/ follows.

A leaf is either a plain string (names, kinds, notes) or ``{value = <number or bool>, source =
"<where it comes from>"}``.  A bare number is refused, so no constant enters the model without
saying where it came from.  ``build`` turns one table into a frozen dataclass, checking that every
required field is present and no unknown field is; the sources travel with it in ``.sources``.
"""
from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

PLAIN_STRING_FIELDS = ("kind", "notes", "source")


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such TOML file")
    with path.open("rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from e


def split_sourced(table: Mapping[str, Any], where: str) -> tuple[dict, dict]:
    """{key: {value, source}} -> ({key: value}, {key: source}); plain strings pass through."""
    values, sources = {}, {}
    for key, leaf in table.items():
        if isinstance(leaf, str):
            if key not in PLAIN_STRING_FIELDS:
                raise ValueError(f"{where}.{key}: strings are only allowed for {PLAIN_STRING_FIELDS}")
            values[key] = leaf
            continue
        if not isinstance(leaf, Mapping) or set(leaf) != {"value", "source"}:
            raise ValueError(f"{where}.{key}: every number needs a source: write "
                             f'{key} = {{ value = ..., source = "..." }}, got {leaf!r}')
        value, source = leaf["value"], leaf["source"]
        if not isinstance(value, (int, float, bool)):
            raise ValueError(f"{where}.{key}: value must be a number or a bool, got {value!r}")
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{where}.{key}: source must be a non-empty string")
        values[key], sources[key] = value, source
    return values, sources


def build(cls, name: str, table: Mapping[str, Any], where: str):
    """A frozen dataclass ``cls`` from one TOML table (fields ``name`` and ``sources`` are filled in)."""
    values, sources = split_sourced(table, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields) - {"source"}
    if unknown:
        known = sorted(set(fields) - {"name", "sources"})
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {known}")
    missing = [f.name for f in fields.values()
               if f.name not in values and f.name not in ("name", "sources")
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    values.pop("source", None)
    for key, value in values.items():  # ints stay ints where the field says int
        if fields[key].type in ("int", int) and isinstance(value, float):
            if value != int(value):
                raise ValueError(f"{where}.{key}: must be a whole number, got {value}")
            values[key] = int(value)
    return cls(name=name, sources=MappingProxyType(dict(sources)), **values)
