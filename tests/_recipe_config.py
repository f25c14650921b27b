"""The recipe's composed settings for tests (tests/recipes): Hydra's compose on recipes/conf."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10_config  # noqa: E402

from torchrl_chunk.experiment import JobError  # noqa: E402


def config(*overrides):
    """The smoke preset with ``overrides``, composed as the recipe's ``@hydra.main`` would."""
    with initialize_config_dir(str(ROOT / "recipes" / "conf"), version_base="1.3"):
        return compose("config", overrides=["preset=smoke", *overrides])


def error_of(*overrides) -> str:
    """The one-line message ``check_config`` stops with for ``overrides``."""
    with pytest.raises(JobError) as err:
        mt10_config.check_config(config(*overrides))
    msg = str(err.value)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg
