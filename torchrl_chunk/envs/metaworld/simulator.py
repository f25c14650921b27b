"""One raw MetaWorld simulator of one task (NumPy level, no TorchRL) and its renderer.

:class:`TaskSim` wraps a MetaWorld v3 env with the paper's episode rules (Section
III.A.1): sparse success, an episode cap of ``max_steps`` env steps, and an optional
camera (elevation -25 deg, azimuth 145 deg; :data:`CAMERA`). Renderers are made lazily
in the process that renders (an EGL context made before ``fork`` is invalid in the
children) and freed before interpreter teardown.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import weakref
from typing import Any

import numpy as np

from torchrl_chunk import gl
from torchrl_chunk.envs.metaworld.tasks import bootstrap_config

__all__ = ["ACTION_DIM", "CAMERA", "STATE_DIM", "TaskSim"]

#: Size of MetaWorld's goal-observable state observation.
STATE_DIM = 39
#: MetaWorld's action: end-effector displacement (3) and gripper effort (1), in [-1, 1].
ACTION_DIM = 4

#: Free camera of the paper's figures (elevation -25, azimuth 145); fovy is the model's 45.
CAMERA: dict[str, Any] = {
    "lookat": (0.0, 0.65, 0.0),
    "distance": 1.25,
    "azimuth": 145.0,
    "elevation": -25.0,
}

#: Multisample anti-aliasing samples of the offscreen renderer (0: off; see ``_make_renderer``).
RENDER_SAMPLES = 0

_LIVE_RENDERING_SIMS: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _close_renderers() -> None:
    # Free GL contexts before interpreter teardown (otherwise EGL prints tracebacks).
    for sim in list(_LIVE_RENDERING_SIMS):
        sim.close_renderer()


def _track_renderer(sim: TaskSim) -> None:
    global _ATEXIT_REGISTERED
    if not _ATEXIT_REGISTERED:
        # registered after MuJoCo's own EGL atexit hook (made with the first context),
        # so it runs before the display is terminated (atexit runs last-in first-out)
        atexit.register(_close_renderers)
        _ATEXIT_REGISTERED = True
    _LIVE_RENDERING_SIMS.add(sim)


@functools.lru_cache(maxsize=None)
def _parsed_model(path: str, parse):
    return parse(path)


@contextlib.contextmanager
def parsed_models_reused():
    """While open, ``mujoco.MjModel.from_xml_path(path)`` returns a copy of the model parsed
    from ``path`` the first time in this process.

    MetaWorld builds every env's model by parsing its XML file (about 0.15 s, 9 % of a
    150k-step state job, which builds some 60 envs); ``mj_copyModel`` makes the same model
    (every array equal, so the same simulation) in a twentieth of that. Each env still gets
    its own copy, as MetaWorld moves bodies and sites of its model per episode. Hand-written:
    neither MetaWorld nor gymnasium's ``MujocoEnv`` takes a model.
    """
    import mujoco

    parse = mujoco.MjModel.from_xml_path

    def from_xml_path(path, *args, **kwargs):
        return copy.copy(_parsed_model(str(path), parse)) if not args and not kwargs else parse(path, *args, **kwargs)

    mujoco.MjModel.from_xml_path = from_xml_path
    try:
        yield
    finally:
        mujoco.MjModel.from_xml_path = parse


def touching_object(env, object_geom_id: int) -> bool:
    """MetaWorld's ``SawyerXYZEnv.touching_object`` (both gripper pads press on the object),
    with the same result on every state, in a tenth of its time.

    MetaWorld's version builds Python lists by walking ``data.contact`` one ``MjContact`` at a
    time, which is 13 % of a push-v3 training job (its dense reward calls it every step,
    though only the success flag is used here). This selects the same contacts, in the same
    order, from the contact arrays and adds their forces with the same Python ``sum``, so
    the sums (and the comparison) are bit for bit MetaWorld's. Hand-written: MetaWorld has no
    faster path. Bound to each :class:`TaskSim`'s env only (``tests/envs/test_metaworld.py``
    compares the two on scripted and random episodes).
    """
    data = env.data
    contact = data.contact
    geoms = contact.geom  # [ncon, 2]: geom1, geom2 of each contact
    with_object = (geoms == object_geom_id).any(-1)
    forces = []
    for pad in ("leftpad_geom", "rightpad_geom"):
        selected = contact.efc_address[((geoms == data.geom(pad).id).any(-1) & with_object)]
        forces.append(sum(data.efc_force[int(a)] for a in selected))
    return 0 < forces[0] and 0 < forces[1]


class TaskSim:
    """One raw MetaWorld env of one task: sparse success, step cap, optional renderer.

    Args:
        task: an MT10 task name.

    Keyword Args:
        max_steps: episode cap in env steps (truncation).
        image_size: side of the rendered square frames; ``None`` for state only (no GL
            needed).
    """

    def __init__(self, task: str, *, max_steps: int, image_size: int | None) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.task = task
        with parsed_models_reused():
            self.raw = ALL_V3_ENVIRONMENTS[task]()
        self.raw.touching_object = functools.partial(touching_object, self.raw)  # the same result, faster
        self.raw.set_task(bootstrap_config(task))
        self.raw.max_path_length = max(int(max_steps), self.raw.max_path_length)
        self.max_steps = int(max_steps)
        self.image_size = image_size
        self._renderer = None
        self._camera = None
        self.t = 0
        self.done = True

    # -- configuration
    def seed(self, seed: int) -> None:
        self.raw.seed(int(seed))

    def reset_fresh(self) -> np.ndarray:
        """Reset to a new configuration drawn from this env's own RNG (training)."""
        self.raw._freeze_rand_vec = False
        self.raw.seeded_rand_vec = True  # use raw.np_random, not the global np.random
        return self._reset()

    def reset_config(self, config) -> np.ndarray:
        """Reset to a fixed configuration (a MetaWorld ``Task``), e.g. for evaluation."""
        self.raw.set_task(config)  # freezes the rand_vec to the config's
        return self._reset()

    def _reset(self) -> np.ndarray:
        state, _ = self.raw.reset()
        self.t = 0
        self.done = False
        return state  # float64, as MetaWorld returns it (the scripted policies read it)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """One env step; returns ``(state, success, truncated)``."""
        if self.done:
            raise RuntimeError(
                f"{self.task}: stepping a finished episode; reset it first (pass a "
                "'_reset' mask) or exclude it with a '_step' mask."
            )
        state, _, _, _, info = self.raw.step(action)
        self.t += 1
        success = bool(info["success"])
        truncated = (not success) and self.t >= self.max_steps
        self.done = success or truncated
        return state, success, truncated

    # -- pixels
    def render(self) -> np.ndarray:
        """The camera frame of the current state: uint8 ``[H, W, 3]``, RGB, upright."""
        if self._renderer is None:
            self._renderer = self._make_renderer()
            _track_renderer(self)
        self._renderer.update_scene(self.raw.data, camera=self._camera)
        return self._renderer.render()

    def _make_renderer(self):
        import mujoco

        gl.ensure_headless_gl()
        size = int(self.image_size)
        vis = self.raw.model.vis.global_
        vis.offwidth = max(int(vis.offwidth), size)
        vis.offheight = max(int(vis.offheight), size)
        # No multisample anti-aliasing (MetaWorld's models ask for 4 samples): on a software
        # rasteriser (Mesa llvmpipe) a 128 px frame takes 8 ms instead of 14 ms, and the
        # frames differ by less than 0.1 grey level on average.
        self.raw.model.vis.quality.offsamples = RENDER_SAMPLES
        try:
            renderer = mujoco.Renderer(self.raw.model, size, size)
        except Exception as err:  # noqa: BLE001  (GL errors come in many types)
            raise gl.gl_error(err) from err
        if getattr(renderer, "_gl_context", None) is None and getattr(
            renderer, "_mjr_context", None
        ) is None:
            raise gl.gl_error()
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = CAMERA["lookat"]
        cam.distance = CAMERA["distance"]
        cam.azimuth = CAMERA["azimuth"]
        cam.elevation = CAMERA["elevation"]
        self._camera = cam
        return renderer

    def close_renderer(self) -> None:
        if self._renderer is not None:
            try:
                self._renderer.close()
            finally:
                self._renderer = None

    def close(self) -> None:
        self.close_renderer()
        self.raw.close()
