"""Named seed streams: independent 32-bit seeds for each (run seed, index, purpose).

Every consumer of randomness derives its seed here rather than from a neighbour's module:
the envs (training resets, scripted demos), the remote collectors (exploration noise) and
the recipes (their own streams). ``SeedSequence`` hashing avoids the MetaWorld traps "seed 0
means unseeded" and "consecutive seeds share structure".
"""

from __future__ import annotations

import numpy as np

#: Seed-sequence stream tag of the training envs (see :func:`derive_seed`).
TRAIN_STREAM = 0
#: Seed-sequence stream tag of scripted-expert demonstration collection.
DEMO_STREAM = 1
#: Seed-sequence stream tag of a remote collector's exploration noise
#: (:class:`torchrl_chunk.distributed.SeededCollector`).
EXPLORATION_STREAM = 3


def derive_seed(seed: int, index: int, stream: int = TRAIN_STREAM) -> int:
    """A 32-bit seed for ``index`` (e.g. a sub-env), independent across indices and streams."""
    if int(seed) < 0:
        raise ValueError(f"seeds must be non-negative integers, got {seed}.")
    state = np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(1)
    return int(state[0])


__all__ = ["DEMO_STREAM", "EXPLORATION_STREAM", "TRAIN_STREAM", "derive_seed"]
