"""Skip marker for tests that render camera frames (they need a headless GL library)."""

import ctypes.util

import pytest

HAS_HEADLESS_GL = bool(ctypes.util.find_library("EGL") or ctypes.util.find_library("OSMesa"))

requires_gl = pytest.mark.skipif(
    not HAS_HEADLESS_GL,
    reason="no headless GL library (libEGL or libOSMesa) installed; install libegl1 "
    "libegl-mesa0 libgl1-mesa-dri (or libosmesa6) to test pixel observations",
)
