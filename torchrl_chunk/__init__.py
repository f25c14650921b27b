"""TorchRL implementation of action-chunked PPO with self behaviour cloning (arXiv 2509.25718).

Importing any part of the package first settles MuJoCo's OpenGL backend: ``torchrl``
imports ``mujoco``, which reads ``MUJOCO_GL`` once and dies on a bad value, so the check
must run before it (:func:`torchrl_chunk.envs.gl.settle_mujoco_gl`). A bad or missing GL
setup then only fails when pixels are asked for, in one line.
"""

from torchrl_chunk.envs import gl as _gl  # noqa: F401  (runs settle_mujoco_gl first)
