"""MuJoCo's OpenGL backend (``MUJOCO_GL``), settled before MuJoCo is imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, and dies there on a
value it does not know (``RuntimeError``) or on ``egl``/``osmesa`` without its library
(an ``AttributeError`` deep in PyOpenGL). ``torchrl.envs`` and ``torchrl.data.vla``
import ``mujoco``, and every part of this package imports them, so
:func:`settle_mujoco_gl` runs from ``torchrl_chunk/__init__.py``: whichever
``torchrl_chunk`` module is imported first, and whether or not ``torchrl`` was imported
before it, the check runs before ``mujoco`` is imported. (Only importing ``mujoco``
itself, or ``torchrl.envs``, *before* ``torchrl_chunk`` leaves ``MUJOCO_GL`` to MuJoCo.)

:func:`settle_mujoco_gl`:

* ``MUJOCO_GL`` set to a backend that can work: kept.
* ``MUJOCO_GL`` set but unusable (a value MuJoCo does not know, ``egl``/``osmesa``
  without ``libEGL``/``libOSMesa``, or rendering disabled), or unset on Linux with no
  headless library: ``mujoco`` is imported with rendering disabled, so state-only envs
  and models work without any GL, and the user's setting is put back (child processes
  decide the same). The reason is kept in :data:`RENDERING_UNAVAILABLE`; asking for
  pixels raises it as a one-line error naming the variable and the fix
  (:func:`check_rendering_available`).
* unset: ``egl`` if ``libEGL`` is installed, else ``osmesa`` if ``libOSMesa`` is.
* ``mujoco`` already imported with ``MUJOCO_GL`` unset (it then defaults to GLFW, which
  needs a display): :func:`ensure_headless_gl` swaps MuJoCo's context class for the EGL
  (then OSMesa) one just before the first renderer is made.

Renderers are created lazily inside each worker process (an EGL context made before
``fork`` is invalid in the children); if no backend works, :func:`gl_error` builds an
error that says what to install.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import sys

__all__ = [
    "GL_BACKEND_SOURCE",
    "RENDERING_UNAVAILABLE",
    "check_rendering_available",
    "ensure_headless_gl",
    "gl_error",
    "settle_mujoco_gl",
]

#: How ``MUJOCO_GL`` was decided: "user", "auto", "preimported", "auto-late" or "none".
GL_BACKEND_SOURCE = "none"
#: Why pixels cannot be rendered in this process (``None`` if they may be).
RENDERING_UNAVAILABLE: str | None = None
_SETTLED: list[str | None] = []  # the decision, once made (settle_mujoco_gl is idempotent)

_HEADLESS_LIBS = {"egl": "EGL", "osmesa": "OSMesa"}
_DISABLED = ("disable", "disabled", "off", "false", "0")
_INSTALL = {
    "egl": "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri",
    "osmesa": "apt-get install libosmesa6",
}
_INSTALL_HINT = (
    f"Headless rendering needs EGL (Debian/Ubuntu: `{_INSTALL['egl']}`) or OSMesa "
    f"(`{_INSTALL['osmesa']}`), and MUJOCO_GL=egl or MUJOCO_GL=osmesa set before `mujoco` "
    "is first imported."
)
_STATE_ONLY = "state-only envs (from_pixels=False) need no GL."


def _valid_values() -> tuple[str, ...]:
    """The ``MUJOCO_GL`` values MuJoCo accepts on this platform (as ``mujoco.gl_context``)."""
    extra = {"Linux": ("glx", "egl", "osmesa"), "Windows": ("wgl",), "Darwin": ("cgl",)}
    return ("enable", "enabled", "on", "true", "1", "glfw", *extra.get(platform.system(), ()))


def _why_unusable(requested: str) -> str | None:
    """Why ``MUJOCO_GL=requested`` cannot render (``None`` if it may)."""
    value = requested.lower().strip()
    if value in _DISABLED:
        return (
            f"Pixel observations need MuJoCo rendering, but MUJOCO_GL={requested} turns it "
            f"off: unset MUJOCO_GL or set MUJOCO_GL=egl (or osmesa); {_STATE_ONLY}"
        )
    if value not in _valid_values():
        return (
            f"Pixel observations need MuJoCo rendering, but MUJOCO_GL={requested} is not a "
            f"value MuJoCo knows ({', '.join(_valid_values())} or disable): set "
            f"MUJOCO_GL=egl (headless; or osmesa) or unset it to let torchrl_chunk choose; "
            f"{_STATE_ONLY}"
        )
    lib = _HEADLESS_LIBS.get(value)
    if lib and not ctypes.util.find_library(lib):
        other = "osmesa" if value == "egl" else "egl"
        return (
            f"Pixel observations need MuJoCo rendering, but MUJOCO_GL={requested} needs "
            f"lib{lib}, which is not installed: install it (Debian/Ubuntu: "
            f"`{_INSTALL[value]}`), or set MUJOCO_GL={other} or unset it; {_STATE_ONLY}"
        )
    return None


def _import_mujoco_without_rendering(requested: str | None) -> None:
    """Import ``mujoco`` with rendering disabled, then put ``MUJOCO_GL`` back as it was."""
    os.environ["MUJOCO_GL"] = "disable"
    try:
        import mujoco  # noqa: F401
    finally:
        if requested is None:
            os.environ.pop("MUJOCO_GL", None)
        else:
            os.environ["MUJOCO_GL"] = requested


def _import_mujoco_with(backend: str, requested: str | None) -> str | None:
    """Import ``mujoco`` with ``backend``; if the GL stack is broken, without rendering.

    A library can be installed and still fail to load (e.g. ``PYOPENGL_PLATFORM=osmesa``
    exported next to ``MUJOCO_GL=egl``): state-only use must not die of it.
    """
    global RENDERING_UNAVAILABLE
    try:
        import mujoco  # noqa: F401
    except (ImportError, AttributeError, OSError, RuntimeError) as err:
        for name in [m for m in sys.modules if m == "mujoco" or m.startswith("mujoco.")]:
            del sys.modules[name]  # a half-imported mujoco would keep the broken context
        RENDERING_UNAVAILABLE = (
            f"Pixel observations need MuJoCo rendering, but MUJOCO_GL={backend} failed to load "
            f"({type(err).__name__}: {' '.join(str(err).split())}): fix that GL setup (check "
            f"PYOPENGL_PLATFORM) or set MUJOCO_GL to another backend; {_STATE_ONLY}"
        )
        _import_mujoco_without_rendering(requested)
        return None
    return backend


def settle_mujoco_gl() -> str | None:
    """Decide ``MUJOCO_GL`` before ``mujoco`` is imported (see the module docstring).

    Never raises for a bad setting: pixels raise later, state-only use works. Returns the
    backend MuJoCo will use (``None`` if rendering is unavailable or left to MuJoCo).
    """
    if not _SETTLED:
        _SETTLED.append(_settle())
    return _SETTLED[0]


def _settle() -> str | None:
    global GL_BACKEND_SOURCE, RENDERING_UNAVAILABLE
    if "mujoco" in sys.modules:
        # Too late to choose: mujoco already fixed its GL context class.
        GL_BACKEND_SOURCE = "preimported"
        return None
    requested = os.environ.get("MUJOCO_GL")
    if requested and requested.strip():
        GL_BACKEND_SOURCE = "user"
        reason = _why_unusable(requested)
        if reason is None:
            return _import_mujoco_with(requested.lower().strip(), requested)
    elif not sys.platform.startswith("linux"):
        GL_BACKEND_SOURCE = "none"  # MuJoCo's own default (GLFW, CGL, WGL) applies
        return None
    else:
        for backend, lib in _HEADLESS_LIBS.items():
            if ctypes.util.find_library(lib):
                os.environ["MUJOCO_GL"] = backend
                if backend == "osmesa":
                    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
                GL_BACKEND_SOURCE = "auto"
                return _import_mujoco_with(backend, requested)
        GL_BACKEND_SOURCE = "none"
        reason = (
            "Pixel observations need MuJoCo rendering, but no headless GL library was found "
            f"(MUJOCO_GL is unset; neither libEGL nor libOSMesa is installed): install one "
            f"(Debian/Ubuntu: `{_INSTALL['egl']}`, or `{_INSTALL['osmesa']}`); {_STATE_ONLY}"
        )
    RENDERING_UNAVAILABLE = reason
    _import_mujoco_without_rendering(requested)
    return None


def check_rendering_available() -> None:
    """Raise a one-line ``RuntimeError`` if pixels cannot be rendered in this process.

    Cheap (no GL context is made): for the up-front check of envs built with
    ``from_pixels=True``. A backend that passes may still fail when the first context
    is made (:func:`ensure_headless_gl`).
    """
    if RENDERING_UNAVAILABLE is not None:
        raise RuntimeError(RENDERING_UNAVAILABLE)
    import mujoco.gl_context as glc

    chosen = getattr(glc, "_MUJOCO_GL", "")
    if chosen in _DISABLED:  # mujoco was imported with rendering off before us
        raise RuntimeError(_why_unusable(chosen))


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
    Raises the reason of :func:`check_rendering_available` if rendering is off. Respects
    an explicit ``MUJOCO_GL``. If MuJoCo was imported with ``MUJOCO_GL`` unset (it then
    defaults to GLFW, which needs a display), tries EGL then OSMesa and installs the
    first that works as ``mujoco.gl_context.GLContext``.
    """
    global GL_BACKEND_SOURCE
    check_rendering_available()
    import mujoco.gl_context as glc

    chosen = getattr(glc, "_MUJOCO_GL", "")
    if chosen:
        return chosen
    errors = []
    for backend, lib in _HEADLESS_LIBS.items():
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
