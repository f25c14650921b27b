"""Headless OpenGL backend selection for MuJoCo rendering.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, so the choice must
be made before ``metaworld``/``mujoco`` are imported. :func:`select_gl_backend` runs at
import time of :mod:`torchrl_chunk.envs`: it keeps a user-set ``MUJOCO_GL``; otherwise it
picks ``egl`` if ``libEGL`` is installed, else ``osmesa`` if ``libOSMesa`` is installed.
If ``mujoco`` was imported before us with ``MUJOCO_GL`` unset (``import torchrl.envs``
imports it), :func:`ensure_headless_gl` swaps MuJoCo's context class for the EGL (then
OSMesa) one just before the first renderer is made. Renderers are created lazily inside
each worker process (an EGL context made before ``fork`` is invalid in the children);
if no backend works, :func:`gl_error` builds an error that says what to install.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

__all__ = ["GL_BACKEND_SOURCE", "ensure_headless_gl", "gl_error", "select_gl_backend"]

#: How ``MUJOCO_GL`` was decided: "user", "auto", "preimported" or "none".
GL_BACKEND_SOURCE = "none"

_INSTALL_HINT = (
    "Headless rendering needs EGL (Debian/Ubuntu: `apt-get install libegl1 "
    "libegl-mesa0 libgl1-mesa-dri`) or OSMesa (`apt-get install libosmesa6`), and "
    "MUJOCO_GL=egl or MUJOCO_GL=osmesa set before `mujoco` is first imported."
)


def select_gl_backend() -> str | None:
    """Choose ``MUJOCO_GL`` (EGL, then OSMesa) unless the user or an import did already.

    Returns the backend name in effect (``None`` if none could be chosen).
    """
    global GL_BACKEND_SOURCE
    current = os.environ.get("MUJOCO_GL")
    if current:
        GL_BACKEND_SOURCE = "user"
        lib = {"egl": "EGL", "osmesa": "OSMesa"}.get(current.lower().strip())
        if lib and "mujoco" not in sys.modules and not ctypes.util.find_library(lib):
            # mujoco's own import would fail with an obscure AttributeError
            raise gl_error(RuntimeError(f"MUJOCO_GL={current} is set but lib{lib} is not installed; unset MUJOCO_GL or install it"))
        return current.lower()
    if "mujoco" in sys.modules:
        # Too late to choose: mujoco already fixed its GL context class.
        GL_BACKEND_SOURCE = "preimported"
        return None
    if not sys.platform.startswith("linux"):
        GL_BACKEND_SOURCE = "none"
        return None
    for backend, lib in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(lib):
            os.environ["MUJOCO_GL"] = backend
            if backend == "osmesa":
                os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
            GL_BACKEND_SOURCE = "auto"
            return backend
    GL_BACKEND_SOURCE = "none"
    return None


def gl_error(cause: BaseException | None = None) -> RuntimeError:
    """A ``RuntimeError`` explaining why no offscreen GL context could be created."""
    backend = os.environ.get("MUJOCO_GL", "<unset>")
    msg = (
        f"Could not create an offscreen OpenGL context for MuJoCo rendering "
        f"(MUJOCO_GL={backend}, chosen: {GL_BACKEND_SOURCE})"
    )
    if cause is not None:
        msg += f": {type(cause).__name__}: {cause}"
    msg += ". " + _INSTALL_HINT + " Use from_pixels=False for state-only envs."
    return RuntimeError(msg)


def _try_backend(backend: str):
    """Import MuJoCo's context class for ``backend`` and create a 1-pixel context."""
    if backend == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
        from mujoco.egl import GLContext
    else:
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
        from mujoco.osmesa import GLContext
    ctx = GLContext(1, 1)
    ctx.free()
    return GLContext


def ensure_headless_gl() -> str:
    """Make sure MuJoCo will create a headless context; returns the backend in use.

    Called in the process that renders, right before the first ``mujoco.Renderer``.
    Respects an explicit ``MUJOCO_GL``. If MuJoCo was imported with ``MUJOCO_GL`` unset
    (it then defaults to GLFW, which needs a display), tries EGL then OSMesa and installs
    the first that works as ``mujoco.gl_context.GLContext``.
    """
    global GL_BACKEND_SOURCE
    import mujoco.gl_context as glc

    chosen = getattr(glc, "_MUJOCO_GL", "")
    if chosen:
        return chosen
    errors = []
    for backend, lib in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if not ctypes.util.find_library(lib):
            errors.append(f"{backend}: lib{lib} not found")
            continue
        try:
            glc.GLContext = _try_backend(backend)
        except Exception as err:  # noqa: BLE001
            errors.append(f"{backend}: {type(err).__name__}: {err}")
            continue
        glc._MUJOCO_GL = backend
        os.environ["MUJOCO_GL"] = backend
        GL_BACKEND_SOURCE = "auto-late"
        return backend
    raise gl_error(RuntimeError("; ".join(errors)))
