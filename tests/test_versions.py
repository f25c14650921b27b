"""The losses refuse a TorchRL release they were not tested with, at import, naming the fix."""

import pytest

from torchrl_chunk._versions import check_torchrl


@pytest.mark.parametrize("ok", ["0.14.1", "0.14.9", "0.14.3rc1", "0.14.2+cu128"])
def test_tested_releases_pass(ok):
    check_torchrl(ok)


@pytest.mark.parametrize("bad", ["0.13.2", "0.14.0", "0.15.0", "0.15.0.dev20261201", "1.0.0"])
def test_other_releases_are_refused_with_the_fix(bad):
    with pytest.raises(ImportError, match=rf"found torchrl {bad}.*pip install 'torchrl>=0\.14\.1,<0\.15\.0'"):
        check_torchrl(bad)


def test_the_installed_release_passes():
    check_torchrl()
