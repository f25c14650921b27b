"""The paper's policy and value heads, and the actor/critic wrappers every model shares.

Section III.A.2: "The policy (action) head and value (critic) head are implemented as
single fully connected layers." A backbone (the CPU MLP, the pixel model or Octo-small)
maps an observation to an embedding; these heads turn the embedding into

* a Gaussian over the whole action chunk ``a_{t:t+h-1}`` (Eq. 1): one ``Linear`` to the
  ``h * action_dim`` means plus a learned, state-independent log-std of the same size;
* a state value ``V_phi(o_t, p_t)``: one ``Linear`` to 1.

:func:`make_chunk_actor_critic` wraps a backbone and the two heads into a TorchRL
``ProbabilisticActor`` and a critic module. The actor's distribution is
``IndependentNormal(event_dim=2)``, so ``log_prob`` is the *joint* log-likelihood of
the chunk, one scalar per sample: exactly what ``ChunkClipPPOLoss`` (Eq. 3) and
``SelfBCLoss`` (Eq. 6) expect.

Both heads run in fp32 with autocast off (:func:`~torchrl_chunk.modules.precision.full_precision`):
under bf16 autocast the backbone's embedding is cast up, so the distribution, its
log-probs (hence the PPO ratio of Eq. 3) and the values are fp32. The heads are one
``Linear`` each, so this costs nothing measurable.
"""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.modules import IndependentNormal, ProbabilisticActor

from torchrl_chunk._deprecation import renamed_attribute, renamed_kwarg
from torchrl_chunk.keys import ACTION_KEY, SAMPLE_LOG_PROB_KEY
from torchrl_chunk.precision import full_precision

EMBEDDING_KEY = "embedding"


def check_log_std_range(log_std_init: float, log_std_min: float, log_std_max: float) -> None:
    """One line when the initial log-std lies outside its clamp range (every chunk head's check)."""
    if not log_std_min <= log_std_init <= log_std_max:
        raise ValueError(
            f"log_std_init={log_std_init} lies outside [log_std_min, log_std_max] = "
            f"[{log_std_min}, {log_std_max}]."
        )


class ChunkGaussianHead(nn.Module):
    """Embedding ``[*, D]`` -> ``(loc, scale)``, each ``[*, chunk_size, action_dim]``.

    Args:
        embed_dim: size ``D`` of the backbone embedding.
        chunk_size: the chunk size ``h`` (the paper's action horizon; it uses 4).
            ``horizon=`` is its deprecated old name, ``.horizon`` of the attribute.
        action_dim: size of one action (4 on MetaWorld).
        log_std_init: initial value of the learned log-std (``-1`` gives std 0.37, the
            value the prototype found to work).
        log_std_min, log_std_max: the log-std is clamped to this range before ``exp``
            so the scale never underflows to 0 or explodes.
    """

    horizon = renamed_attribute("horizon", "chunk_size")

    @renamed_kwarg("horizon", "chunk_size")
    def __init__(
        self,
        embed_dim: int,
        chunk_size: int,
        action_dim: int,
        *,
        log_std_init: float = -1.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        if chunk_size < 1 or action_dim < 1 or embed_dim < 1:
            raise ValueError(
                f"ChunkGaussianHead needs embed_dim, chunk_size and action_dim >= 1, got "
                f"embed_dim={embed_dim}, chunk_size={chunk_size}, action_dim={action_dim}."
            )
        check_log_std_range(log_std_init, log_std_min, log_std_max)
        self.chunk_size = chunk_size
        self.action_dim = action_dim
        self.mean = nn.Linear(embed_dim, chunk_size * action_dim)
        self.log_std = nn.Parameter(torch.full((chunk_size, action_dim), float(log_std_init)))
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = full_precision(self.mean, embedding).unflatten(-1, (self.chunk_size, self.action_dim))
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        scale = log_std.exp().expand_as(loc)
        return loc, scale


class ValueHead(nn.Module):
    """Embedding ``[*, D]`` -> state value ``[*, 1]`` (a single ``Linear``, run in fp32)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.value = nn.Linear(embed_dim, 1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return full_precision(self.value, embedding)


@renamed_kwarg("horizon", "chunk_size")
def make_chunk_actor_critic(
    backbone: TensorDictModule,
    embed_dim: int,
    chunk_size: int,
    action_dim: int,
    *,
    critic_backbone: TensorDictModule | None = None,
    log_std_init: float = -1.0,
    embedding_key: str = EMBEDDING_KEY,
) -> tuple[ProbabilisticActor, TensorDictSequential]:
    """Build the chunk actor and the critic around backbone(s).

    Args:
        backbone: a ``TensorDictModule`` reading observation keys and writing
            ``embedding_key`` (``[*B, embed_dim]``).
        embed_dim, chunk_size, action_dim: sizes, see :class:`ChunkGaussianHead`
            (``horizon=`` is the deprecated old name of ``chunk_size``).
        critic_backbone: a separate backbone for the critic; ``None`` shares ``backbone``
            between actor and critic (the paper's Fig. 1(a) layout).
        log_std_init: initial log-std of the chunk Gaussian.
        embedding_key: the key the backbone writes.

    Returns:
        ``(actor, critic)``. The actor samples ``"action"`` of shape
        ``[*B, chunk_size, action_dim]`` and writes its joint log-prob under
        ``"action_log_prob"`` (shape ``[*B]``); the critic (a ``TensorDictSequential``
        of the backbone and the value head) writes ``"state_value"`` (``[*B, 1]``).
    """
    head = TensorDictModule(
        ChunkGaussianHead(embed_dim, chunk_size, action_dim, log_std_init=log_std_init),
        in_keys=[embedding_key],
        out_keys=["loc", "scale"],
    )
    actor = ProbabilisticActor(
        TensorDictSequential(backbone, head),
        in_keys=["loc", "scale"],
        out_keys=[ACTION_KEY],
        distribution_class=IndependentNormal,
        # event_dim=2: the log-prob sums over the chunk AND action dims -> joint chunk
        # likelihood, one scalar per sample (Eq. 3 / Eq. 6).
        distribution_kwargs={"event_dim": 2},
        return_log_prob=True,
        log_prob_key=SAMPLE_LOG_PROB_KEY,
    )
    value_body = critic_backbone if critic_backbone is not None else backbone
    critic = TensorDictSequential(
        value_body,
        TensorDictModule(ValueHead(embed_dim), in_keys=[embedding_key], out_keys=["state_value"]),
    )
    return actor, critic


def chunk_head(actor: nn.Module) -> ChunkGaussianHead:
    """The :class:`ChunkGaussianHead` inside an actor made by :func:`make_chunk_actor_critic`
    (or any model built on it): its ``mean`` layer and ``log_std`` are the chunk Gaussian's
    parameters, e.g. ``chunk_head(actor).log_std`` to log or set the exploration noise.

    Raises ``ValueError`` when the actor holds no such head, or more than one.
    """
    heads = [m for m in actor.modules() if isinstance(m, ChunkGaussianHead)]
    if len(heads) != 1:
        raise ValueError(
            f"Expected one ChunkGaussianHead in the actor, found {len(heads)}: build the actor with "
            "make_chunk_actor_critic (or a make_*_actor_critic of torchrl_chunk.modules).")
    return heads[0]
