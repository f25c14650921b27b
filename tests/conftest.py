"""Session fixtures shared by several test directories."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """Address of a local Ray head node (2 CPUs), started once and always stopped."""
    from _ray import local_cluster

    with local_cluster() as address:
        yield address


@pytest.fixture(scope="session")
def ray_connected(ray_cluster):
    """``ray``, with this test process connected to :func:`ray_cluster` (its head)."""
    import ray

    assert ray.is_initialized()
    return ray
