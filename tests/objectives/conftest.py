"""Every test in this folder runs with warnings turned into errors (as TorchRL's own loss
tests do), so deprecations and silent fallbacks fail loudly."""

from __future__ import annotations

import pytest

from _loss_helpers import make_actor_critic


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/objectives" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.filterwarnings("error"))


@pytest.fixture
def actor_critic():
    return make_actor_critic()
