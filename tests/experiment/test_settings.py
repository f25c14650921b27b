"""Typed, closed settings: unknown keys, missing ones and wrong types, each named in one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Union

from torchrl_chunk.experiment.settings import (
    MAY_BE_ABSENT, expects, int_range, num_range, range_problem, schema_problems)


@dataclass
class Train:
    steps: int
    lr: float
    workers: Union[int, str] = field(metadata=expects("auto or an integer"))
    hidden: List[int] = field(default_factory=list)
    note: Optional[str] = field(default=None, metadata=MAY_BE_ABSENT)


@dataclass
class Settings:
    seed: int
    run_dir: Optional[str]
    train: Train


GOOD = {"seed": 1, "run_dir": None, "train": {"steps": 10, "lr": 1, "workers": "auto", "hidden": [4, 4]}}


def test_good_settings_pass_and_an_int_is_a_number():
    assert schema_problems(GOOD, Settings, source="conf.yaml") == []


def test_every_problem_is_named_at_once_never_converted():
    bad = {"seed": True, "run_dir": 2024, "trian": {}, "train": {"steps": 1.5, "lr": "x", "workers": 1.5,
                                                                 "hidden": [1, "a"], "step": 3}}
    assert schema_problems(bad, Settings, source="conf.yaml") == [
        "trian is not a setting (did you mean train?)",
        "seed must be an integer, got True",
        "run_dir must be a string or null, got 2024 (on the command line, quote it: run_dir='2024')",
        "train.step is not a setting (did you mean train.steps?)",
        "train.steps must be an integer, got 1.5",
        "train.lr must be a number, got 'x'",
        "train.workers must be auto or an integer, got 1.5",
        "train.hidden[1] must be an integer, got 'a'",
    ]
    assert schema_problems({"seed": 1, "train": GOOD["train"], "zzz": 0}, Settings, source="conf.yaml") == [
        "zzz is not a setting (see conf.yaml): remove it or correct its name",
        "run_dir is missing: add it, as in conf.yaml",
    ]
    assert schema_problems({**GOOD, "old": {"key": 1}}, Settings, allow=["old.key"]) == []  # an older run's key


def test_ranges():
    assert range_problem("a", 0, int_range(1)) == "a must be >= 1, got 0"
    assert range_problem("a", None, int_range(1, optional=True)) is None
    assert range_problem("a", None, int_range(1)) == "a must be set (got null)"
    assert range_problem("b", 0.0, num_range(0, open_lo=True)) == "b must be > 0, got 0.0"
    assert range_problem("b", 2, num_range(0, 1)) == "b must be >= 0 and <= 1, got 2"
    assert range_problem("b", float("nan"), num_range(0)) == "b must be a finite number, got nan"
    assert range_problem("c", 2.0, int_range(0)) == "c must be an integer, got 2.0"
