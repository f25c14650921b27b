"""Typed, closed settings: every problem named in one line, all at once, before anything is written.

:func:`schema_problems` checks plain settings (a nested dict, e.g. a resolved Hydra config)
against a dataclass per section: a key that is not a setting, a setting that is missing, and
a value of the wrong type are each named, with the closest valid key for a typo.
:func:`range_problem` checks a number against a rule made by :func:`int_range` or
:func:`num_range`. A recipe joins the problems into its one-line error.

How, and why not Hydra's ConfigStore as the base of a recipe's defaults list:

* **Strict, never converted.** OmegaConf 2.3 (Hydra 1.3) converts a value to its field's
  type instead of refusing it: ``yes``/``on``/``1`` become ``true``, an int becomes a float
  (``ray.job_gpus: 0`` would be saved as ``0.0``), any scalar becomes a string. Here a bool
  is only ``true``/``false``, an int is an int, a number is an int or a float as given, and
  a string is a string: the resolved settings (a run's ``config.yaml``, which continuing
  and resuming compare) are exactly those composed. On the command line Hydra reads only
  ``true``/``false`` as booleans, so ``env.from_pixels=yes`` or ``=maybe`` is a string and
  refused; in a YAML file ``yes``/``no``/``on``/``off`` are YAML 1.1 booleans already.
* **Unions.** OmegaConf 2.3 has no unions of primitive types (``ppo.clip_value``: a bool or
  a number; ``env.num_workers``: ``auto`` or an int) and would leave them ``Any``, unchecked.
  Here they are unions; :func:`expects` words what such a field takes.
* **Every way settings arrive.** Hydra adds ``+key=value`` even to a struct config, and a
  YAML given with ``--config-path``/``--config-name`` need not list a schema in its
  defaults; checking the composed result covers the command line, the presets, such a YAML
  and a resumed run's ``config.yaml`` alike.
* **One line.** Hydra reports a composition error itself, over several lines and one error
  at a time; here every problem is one line naming the key.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``None``, ``Any``, unions of
them, ``List[...]``, ``Dict[str, ...]`` and nested dataclasses.
"""

from __future__ import annotations

import difflib
import math
import types
from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Dict, List, Union, get_args, get_origin, get_type_hints

#: Field metadata: the key may be absent (declared by a preset that needs it, not by the defaults).
MAY_BE_ABSENT = {"may_be_absent": True}


def expects(text: str) -> dict:
    """Field metadata: what a type error says the value must be, for unions of a type and keywords."""
    return {"expects": text}


def schema_problems(values: Mapping, schema: type, *, prefix: str = "", source: str = "the defaults",
                    label: str = "the settings", allow: Iterable[str] = ()) -> list[str]:
    """Every key of ``values`` that ``schema`` lacks, every field it lacks, every value of the wrong type.

    Args:
        values: the settings (or the section of them at ``prefix``, e.g. ``"model."``).
        schema: a dataclass; a field that is a dataclass is a section.
        source: where the settings are declared, for "add it, as in <source>".
        label: the section's name in "<label> has <keys>".
        allow: dotted keys tolerated although not settings (a resumed run's ``config.yaml``
            written by an older recipe).
    """
    check = _Check(frozenset(allow))
    check.section(values, schema, prefix, source, label)
    return check.problems


class _Check:
    def __init__(self, allow: frozenset):
        self.allow, self.problems = allow, []

    def section(self, values: Mapping, schema: type, prefix: str, source: str, label: str) -> None:
        hints = get_type_hints(schema)
        known = {f.name: f for f in fields(schema)}
        for key in values:
            name = f"{prefix}{key}"
            if key not in known and not self._allowed(name):
                self.problems.append(_unknown(name, str(key), list(known), prefix, label, source))
        for key, f in known.items():
            name = f"{prefix}{key}"
            if key in values:
                self.value(name, values[key], hints[key], source, f.metadata.get("expects"))
            elif not f.metadata.get("may_be_absent"):
                self.problems.append(f"{name} is missing: add it, as in {source}")

    def value(self, name: str, value: Any, tp: Any, source: str, expected: str | None = None) -> None:
        if is_dataclass(tp):
            if isinstance(value, Mapping):
                self.section(value, tp, name + ".", source, name)
            else:
                self.problems.append(f"{name} must be a group of settings ({', '.join(f.name for f in fields(tp))}), "
                                     f"got {value!r}")
            return
        origin = get_origin(tp)
        if origin in (list, List) and _matches(value, tp):
            for i, item in enumerate(value):
                self.value(f"{name}[{i}]", item, get_args(tp)[0], source)
            return
        if origin in (dict, Dict) and isinstance(value, Mapping):
            for key, item in value.items():
                self.value(f"{name}.{key}", item, get_args(tp)[1], source)
            return
        if _matches(value, tp):
            return
        message = f"{name} must be {expected or _describe(tp)}, got {value!r}"
        if set(_alternatives(tp)) - {type(None)} == {str} and isinstance(value, (bool, int, float)):
            message += f" (on the command line, quote it: {name}='{value}')"  # e.g. run_dir=2024
        self.problems.append(message)

    def _allowed(self, name: str) -> bool:
        return name in self.allow or any(a.startswith(name + ".") for a in self.allow)


def _unknown(name: str, key: str, valid: list[str], prefix: str, label: str, source: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"{name} is not a setting (did you mean {prefix}{close[0]}?)"
    where = f"{label} has {', '.join(valid)}" if prefix else f"see {source}"
    return f"{name} is not a setting ({where}): remove it or correct its name"


def _alternatives(tp: Any) -> tuple:
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(a for arm in get_args(tp) for a in _alternatives(arm))
    return (tp,)


def _matches(value: Any, tp: Any) -> bool:
    """``value`` is of type ``tp`` as given: no conversion (a bool is not an int, an int is a float)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if get_origin(tp) in (Union, types.UnionType):
        return any(_matches(value, arm) for arm in get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if get_origin(tp) in (list, List):
        return isinstance(value, (list, tuple))
    if get_origin(tp) in (dict, Dict):
        return isinstance(value, Mapping)
    raise TypeError(f"no check for the type {tp!r}")


_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _describe(tp: Any) -> str:
    if get_origin(tp) in (list, List):
        return f"a list of {_PLURALS.get(get_args(tp)[0], 'values')}"
    if get_origin(tp) in (dict, Dict):
        return "a mapping"
    names = [_NAMES.get(a) or _describe(a) for a in _alternatives(tp)]
    names = [n for n in names if n != "null"] + (["null"] if type(None) in _alternatives(tp) else [])
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


# ----------------------------------------------------------------------------------------
# ranges of numbers
# ----------------------------------------------------------------------------------------
def int_range(lo: int, hi: float = math.inf, optional: bool = False) -> tuple:
    """An integer in ``[lo, hi]`` (``optional``: or null)."""
    return ("int", lo, hi, optional, False)


def num_range(lo: float, hi: float = math.inf, optional: bool = False, open_lo: bool = False) -> tuple:
    """A finite number in ``[lo, hi]`` (``open_lo``: strictly greater than ``lo``; ``optional``: or null)."""
    return ("num", lo, hi, optional, open_lo)


def range_problem(key: str, value: Any, rule: tuple) -> str | None:
    """``None`` when ``value`` follows ``rule`` (:func:`int_range`, :func:`num_range`), else the problem."""
    kind, lo, hi, optional, open_lo = rule
    if value is None:
        return None if optional else f"{key} must be set (got null)"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and not is_int:
        return f"{key} must be an integer, got {value!r}"
    if kind == "num" and not (is_int or isinstance(value, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return f"{key} must be a finite number, got {value!r}"
    if value < lo or (open_lo and value == lo) or value > hi:
        rel = ">" if open_lo else ">="
        rng = f"{rel} {lo}" + (f" and <= {hi}" if hi != math.inf else "")
        return f"{key} must be {rng}, got {value!r}"
    return None
