"""TorchRL implementation of action-chunked PPO with self behaviour cloning (arXiv 2509.25718).

Importing any part of the package first settles MuJoCo's OpenGL backend: ``torchrl``
imports ``mujoco``, which reads ``MUJOCO_GL`` once and dies on a bad value, so the check
must run before it (:func:`torchrl_chunk.gl.settle_mujoco_gl`). A bad or missing GL
setup then only fails when pixels are asked for, in one line. (This imports nothing of
the simulator wrappers: ``torchrl_chunk.modules`` stays free of ``torchrl_chunk.envs``.)
"""

from torchrl_chunk import gl as _gl

_gl.settle_mujoco_gl()  # before anything imports mujoco (torchrl.envs, torchrl.data.vla)
