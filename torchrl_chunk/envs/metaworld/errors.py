"""Errors of the MetaWorld env that a training loop may catch (and add its checkpoint to).

Both are ``ValueError`` subclasses with one-line messages, and pickle with their
attributes (they cross :class:`~torchrl_chunk.envs.WorkerPoolEnv` worker pipes).
"""

from __future__ import annotations

__all__ = ["NonFiniteActionError", "NonFiniteObservationError"]


class NonFiniteObservationError(ValueError):
    """The simulator returned a NaN or inf observation (the physics diverged).

    Attributes:
        task: the MT10 task.
        env_index: the sub-env's index (``worker_index_offset + i``, as in seeding).
        key: the observation key holding the non-finite value.
    """

    def __init__(self, task: str, env_index: int, key) -> None:
        self.task, self.env_index, self.key = task, int(env_index), key
        super().__init__(
            f"MetaWorldEnv({task}) env {env_index}: the simulator returned a non-finite "
            f"observation {key!r} (NaN or inf; the physics diverged), so the episode cannot "
            "go on; restart from the last good checkpoint, and if it recurs lower the "
            "learning rate or check the actions the policy sends."
        )

    def __reduce__(self):  # keep the attributes across worker processes
        return type(self), (self.task, self.env_index, self.key)


class NonFiniteActionError(ValueError):
    """The policy produced a NaN or inf action (attributes ``task``, ``env_indices``)."""

    def __init__(self, task: str, env_indices) -> None:
        self.task, self.env_indices = task, [int(i) for i in env_indices]
        super().__init__(
            f"MetaWorldEnv({task}) env {', '.join(map(str, self.env_indices))}: the policy "
            "produced a non-finite action (NaN or inf) from finite observations; the policy's "
            "weights or outputs diverged: restart from the last good checkpoint (lower the "
            "learning rate if it recurs)."
        )

    def __reduce__(self):
        return type(self), (self.task, self.env_indices)
