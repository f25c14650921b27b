"""Action-chunked PPO (Section II.A, Eq. 2-5)."""

from __future__ import annotations

from typing import Literal

import torch
from tensordict import TensorDictBase
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.utils import ValueEstimators

from torchrl_chunk.keys import STEPS_EXECUTED_KEY

DiscountMode = Literal["chunk", "step"]

_ACTOR_HINT = (
    "Build the actor so that its distribution's log_prob sums over the chunk AND the "
    "action dims, e.g. ProbabilisticActor(..., distribution_class=IndependentNormal, "
    "distribution_kwargs={'event_dim': 2}) (TanhNormal spells it 'event_dims': 2), or use "
    "torchrl_chunk.modules.make_chunk_actor_critic, which does this."
)


class ChunkClipPPOLoss(ClipPPOLoss):
    r"""Clipped PPO over whole action chunks ``a_{t:t+h-1}`` (Eq. 2-5).

    One policy decision emits a chunk of ``h`` actions (Eq. 1); the importance ratio is
    the ratio of the *joint* chunk likelihoods (Eq. 3)

    .. math::
        r_t(\theta) = \frac{\pi_\theta(a_{t:t+h-1} \mid o_t, p_t)}
                           {\pi_{\theta_{old}}(a_{t:t+h-1} \mid o_t, p_t)},

    the policy loss is the negated clipped surrogate (Eq. 2)

    .. math::
        \mathcal{L}_{PPO} = -\mathbb{E}_t\big[\min(r_t \hat A_t,\;
            \mathrm{clip}(r_t, 1-\epsilon, 1+\epsilon)\hat A_t)\big],

    and the critic uses the clipped value loss (Eq. 4)

    .. math::
        \mathcal{L}_{critic} = \mathbb{E}\big[\max\big((R - V_\phi)^2,\;
            (R - \mathrm{clip}(V_\phi, V_{\phi_{old}} - \epsilon, V_{\phi_{old}} + \epsilon))^2\big)\big]

    with ``R`` the GAE value target. For ``lambda = 0`` it is the one-step target of Eq. 5,
    ``R = R_t + gamma * V_old(o_{t+1})``, where ``R_t`` is the chunk reward and ``o_{t+1}``
    the observation after the chunk.

    This class is TorchRL's :class:`~torchrl.objectives.ClipPPOLoss` with three changes:

    * **validation**: the actor's log-prob must be one scalar per sample (the joint chunk
      likelihood). An actor whose distribution has an event over the action dim only
      (TorchRL's default ``event_dim=1``) yields ``[*B, h]`` log-probs, which the parent
      silently turns into per-action PPO; here it raises ``ValueError``. The action must
      be ``[*B, h, action_dim]``, with ``h == horizon`` when ``horizon`` is given.
    * **paper defaults**: ``clip_epsilon=0.2``, clipped value loss with the same 0.2,
      ``loss_critic_type="l2"`` (squared error), ``critic_coeff=0.5``,
      ``entropy_coeff=0.0``, GAE with ``gamma=0.99``, ``lmbda=0.95``.
    * **discount per chunk or per step** (Eq. 5):

      - ``discount="chunk"`` (the paper): one factor ``gamma`` per chunk decision;
      - ``discount="step"``: ``gamma ** k`` with ``k`` the number of env steps actually
        executed by the chunk (``("next", "steps_executed")``, written by
        :class:`~torchrl_chunk.envs.ChunkedEnv`), via GAE's ``steps_to_next_obs``. This
        is the semi-MDP discount: a chunk cut short by termination is discounted less.

    Termination and truncation follow TorchRL's GAE: ``("next", "terminated")`` stops the
    bootstrap (``V(o_{t+1}) = 0``), a truncation at the time limit (``done`` without
    ``terminated``) bootstraps from ``V(o_{t+1})``.

    Args:
        actor_network: a probabilistic actor whose ``log_prob`` is the joint chunk
            log-likelihood (see :func:`torchrl_chunk.modules.make_chunk_actor_critic`).
        critic_network: the value network writing ``"state_value"``.

    Keyword Args:
        horizon: expected chunk length ``h``; checked against the action when given.
        discount: ``"chunk"`` or ``"step"``, see above.
        gamma, lmbda: GAE discount and lambda.
        deactivate_vmap: evaluate the critic in GAE without ``torch.vmap`` (needed for
            critics whose layers vmap does not support, e.g. convolutions).
        clip_epsilon, clip_value, loss_critic_type, critic_coeff, entropy_coeff: as in
            ``ClipPPOLoss``; defaults are the paper's.
        **kwargs: any other ``ClipPPOLoss`` keyword (``normalize_advantage``,
            ``separate_losses``, ``functional``, ``reduction``, ...).

    Outputs: ``loss_objective``, ``loss_critic``, ``loss_entropy`` (sum them) and the
    parent's detached diagnostics (``clip_fraction``, ``kl_approx``, ``ESS``,
    ``entropy``, ``explained_variance``, ``value_clip_fraction``, ...).

    Example:
        >>> actor, critic = make_chunk_actor_critic(backbone, 64, horizon=4, action_dim=4)
        >>> loss = ChunkClipPPOLoss(actor, critic, horizon=4)
        >>> with torch.no_grad():
        ...     loss.value_estimator(rollout)  # GAE: writes advantage and value_target
        >>> out = loss(rollout.reshape(-1))
        >>> (out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]).backward()
    """

    def __init__(
        self,
        actor_network,
        critic_network=None,
        *,
        horizon: int | None = None,
        discount: DiscountMode = "chunk",
        gamma: float = 0.99,
        lmbda: float = 0.95,
        clip_epsilon: float = 0.2,
        clip_value: bool | float | None = True,
        loss_critic_type: str = "l2",
        critic_coeff: float | None = 0.5,
        entropy_coeff: float | None = 0.0,
        deactivate_vmap: bool = False,
        **kwargs,
    ) -> None:
        if discount not in ("chunk", "step"):
            raise ValueError(f"discount must be 'chunk' or 'step', got {discount!r}.")
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}.")
        if not 0.0 <= gamma <= 1.0 or not 0.0 <= lmbda <= 1.0:
            raise ValueError(f"gamma and lmbda must lie in [0, 1], got gamma={gamma}, lmbda={lmbda}.")
        super().__init__(
            actor_network,
            critic_network,
            clip_epsilon=clip_epsilon,
            clip_value=clip_value,
            loss_critic_type=loss_critic_type,
            critic_coeff=critic_coeff,
            entropy_coeff=entropy_coeff,
            **kwargs,
        )
        self.horizon = horizon
        self.discount = discount
        if critic_network is not None:
            self.make_value_estimator(
                ValueEstimators.GAE, gamma=gamma, lmbda=lmbda, deactivate_vmap=deactivate_vmap
            )
            if discount == "step":
                self.value_estimator.set_keys(steps_to_next_obs=("next", STEPS_EXECUTED_KEY))

    # -- validation -------------------------------------------------------------------
    def _check_action(self, tensordict: TensorDictBase) -> None:
        action = tensordict.get(self.tensor_keys.action, None)
        if action is None:
            raise KeyError(
                f"ChunkClipPPOLoss: the batch has no action under {self.tensor_keys.action!r}. "
                "Pass the rollout collected with the chunk actor, or set_keys(action=...)."
            )
        if not isinstance(action, torch.Tensor):
            return  # composite actions: shapes are checked through the log-prob
        batch_dims = tensordict.batch_dims
        if action.ndim != batch_dims + 2:
            raise ValueError(
                f"ChunkClipPPOLoss expects actions shaped [*batch, h, action_dim] "
                f"(batch {tuple(tensordict.batch_size)}), got {tuple(action.shape)}. "
                "A single action per step is a chunk of h=1: unsqueeze(-2) it."
            )
        if self.horizon is not None and action.shape[-2] != self.horizon:
            raise ValueError(
                f"ChunkClipPPOLoss(horizon={self.horizon}) got chunks of length "
                f"{action.shape[-2]} (action shape {tuple(action.shape)}). Use the same h "
                "for the policy, the env and the loss."
            )

    def _get_cur_log_prob(self, tensordict: TensorDictBase, params=None):
        log_prob, dist, is_composite = super()._get_cur_log_prob(tensordict, params=params)
        if not is_composite and log_prob.shape != tensordict.batch_size:
            raise ValueError(
                f"ChunkClipPPOLoss needs one joint log-prob per chunk (shape "
                f"{tuple(tensordict.batch_size)}), but the actor returned shape "
                f"{tuple(log_prob.shape)}: its distribution treats part of the chunk as batch, "
                f"which would make this per-action PPO. {_ACTOR_HINT}"
            )
        return log_prob, dist, is_composite

    def _log_weight(self, tensordict: TensorDictBase, adv_shape: torch.Size):
        prev = tensordict.get(self.tensor_keys.sample_log_prob, None)
        if isinstance(prev, torch.Tensor) and prev.shape != adv_shape:
            raise ValueError(
                f"The stored log-prob {self.tensor_keys.sample_log_prob!r} has shape "
                f"{tuple(prev.shape)}, expected one scalar per chunk {tuple(adv_shape)}: the "
                f"actor used for collection is not a joint-chunk actor. {_ACTOR_HINT}"
            )
        return super()._log_weight(tensordict, adv_shape)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        self._check_action(tensordict)
        return super().forward(tensordict)
