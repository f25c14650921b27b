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
    """``ray``, with this test process connected to :func:`ray_cluster` (its head).

    A test using it fails after ``_ray.TEST_DEADLINE_S`` instead of hanging in a Ray call
    (see :func:`pytest_pyfunc_call`)."""
    import ray

    assert ray.is_initialized()
    return ray


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    """Tests that block on Ray in this process (``ray_connected``) run under a deadline: on a
    loaded machine Ray's workers can be starved, and ``ray.get`` would wait for ever.

    (Tests that only pass ``ray_cluster``'s address to a recipe wait on a subprocess, with
    a timeout of their own.)"""
    if "ray_connected" not in pyfuncitem.fixturenames:
        return (yield)
    from _ray import TEST_DEADLINE_S, deadline

    with deadline(TEST_DEADLINE_S, pyfuncitem.nodeid):
        return (yield)
