"""The online post-training objective: beta_t * PPO + self-BC (Section II.C, Eq. 7)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import LossModule

from torchrl_chunk.objectives.chunk_ppo import ChunkClipPPOLoss
from torchrl_chunk.objectives.self_bc import SelfBCLoss
from torchrl_chunk.schedules import BetaSchedule, TanhWarmup

AdvanceMode = Literal["manual", "per_update"]


class PPOBCLoss(LossModule):
    r"""``L_online = beta_t * L_PPO + L_BC`` (Eq. 7) with ``beta_t`` from a schedule (Eq. 8).

    Composes a :class:`ChunkClipPPOLoss` (on-policy rollout batch), a :class:`SelfBCLoss`
    (demo-buffer batch) and a :class:`~torchrl_chunk.schedules.BetaSchedule`. The returned
    ``loss_*`` entries sum to

    .. math::
        \beta_t\,(\mathcal{L}_{surrogate} + \mathcal{L}_{entropy})
        + c_V\,\mathcal{L}_{critic} + \mathcal{L}_{BC}

    ``beta_t`` weighs the *policy* objective (parameters ``theta``). The value loss
    trains the critic ``phi`` (Eq. 4) and is not scaled by default, so the critic learns
    during the warm-up, when it matters most (Section II.C: early on "the critic may be
    poorly aligned with the actor"). ``scale_critic=True`` multiplies it by ``beta_t``
    too (``beta_t * L_PPO`` read literally with ``L_PPO`` including the value term).

    **Who advances t.** ``advance_schedule="manual"`` (default): the caller advances the
    schedule, e.g. ``loss.schedule.step(frames)`` after each collection when ``t`` counts
    env steps (the recipes do this; the paper's ``T_warmup = 40k`` is in steps).
    ``"per_update"``: each forward call advances ``t`` by one, so ``t`` counts gradient
    updates. The current ``t`` is part of ``state_dict``.

    Args:
        ppo_loss: the chunk PPO loss.
        bc_loss: the self-BC loss; must share the actor with ``ppo_loss``.
        schedule: ``beta_t``; default ``TanhWarmup(40_000)``.

    Keyword Args:
        demo_buffer: where ``loss(rollout)`` samples the demo batch from (anything with
            ``.sample()``, e.g. the
            :class:`~torchrl_chunk.data.LengthFilteredReplayBuffer`). Optional: without
            it, call ``loss(rollout, demo)``.
        demo_batch_size: passed to ``demo_buffer.sample(demo_batch_size)``; ``None``
            calls ``demo_buffer.sample()`` (the buffer's own batch size).
        scale_critic: multiply the value loss by ``beta_t`` as well. Default ``False``.
        advance_schedule: ``"manual"`` or ``"per_update"``, see above.
        check_finite: raise ``FloatingPointError`` naming the term when a loss is NaN or
            infinite, instead of letting it reach the optimizer. Default ``True``.

    Precision: set ``precision=`` on both sub-losses (they must agree; ``"bf16"`` runs
    the backbone in bf16 autocast with fp32 weights, heads, log-probs and values). With a
    shared backbone the PPO term runs it once on the rollout, the BC term once on the
    demo batch.

    Call ``loss(rollout, demo)`` or, with ``demo_buffer`` given, ``loss(rollout)`` (the
    ``forward(tensordict)`` form TorchRL trainers call), which samples ``demo`` from the
    buffer and moves it to the rollout's device. ``rollout`` is a flat minibatch of chunk
    decisions with ``advantage`` / ``value_target`` already computed
    (``ppo_loss.value_estimator``) or left to ``ppo_loss`` to compute.

    Outputs: ``loss_objective``, ``loss_entropy`` (both ``beta``-scaled), ``loss_critic``,
    ``loss_bc``; ``beta``; the unscaled ``ppo_objective`` / ``ppo_entropy``; and every
    detached diagnostic of the two losses: ``clip_fraction``, ``kl_approx``, ``entropy``,
    ``explained_variance``, ``value_clip_fraction``, ``ESS``, ``max_ratio``,
    ``mean_ratio`` (:class:`ChunkClipPPOLoss`), ``bc_nll``, ``bc_mse``, ``bc_scale``
    (:class:`SelfBCLoss`). All are tensors; none is read on the host here.

    Example:
        >>> loss = PPOBCLoss(ChunkClipPPOLoss(actor, critic), SelfBCLoss(actor, loss_form="mse"),
        ...                  TanhWarmup(40_000))
        >>> out = loss(rollout_minibatch, demo_buffer.sample(256))
        >>> # or: PPOBCLoss(..., demo_buffer=demo_buffer, demo_batch_size=256)(rollout_minibatch)
        >>> sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        >>> loss.schedule.step(frames_collected)
    """

    @dataclass
    class _AcceptedKeys:
        """PPOBCLoss reads no key itself: set keys on ``ppo_loss`` and ``bc_loss``."""

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys

    def __init__(
        self,
        ppo_loss: ChunkClipPPOLoss,
        bc_loss: SelfBCLoss,
        schedule: BetaSchedule | None = None,
        *,
        demo_buffer=None,
        demo_batch_size: int | None = None,
        scale_critic: bool = False,
        advance_schedule: AdvanceMode = "manual",
        check_finite: bool = True,
    ) -> None:
        if not isinstance(ppo_loss, ChunkClipPPOLoss):
            raise TypeError(f"ppo_loss must be a ChunkClipPPOLoss, got {type(ppo_loss).__name__}.")
        if not isinstance(bc_loss, SelfBCLoss):
            raise TypeError(f"bc_loss must be a SelfBCLoss, got {type(bc_loss).__name__}.")
        if advance_schedule not in ("manual", "per_update"):
            raise ValueError(
                f"advance_schedule must be 'manual' or 'per_update', got {advance_schedule!r}."
            )
        if demo_buffer is not None and not callable(getattr(demo_buffer, "sample", None)):
            raise TypeError(
                f"demo_buffer must have a .sample() method, got {type(demo_buffer).__name__}."
            )
        if demo_batch_size is not None and not (
            isinstance(demo_batch_size, int) and demo_batch_size > 0
        ):
            raise ValueError(f"demo_batch_size must be a positive int, got {demo_batch_size!r}.")
        if ppo_loss.precision != bc_loss.precision:
            raise ValueError(
                f"ppo_loss and bc_loss must use one precision, got {ppo_loss.precision!r} and "
                f"{bc_loss.precision!r}: pass the same precision= to both."
            )
        if ppo_loss.actor_network is not bc_loss.actor_network:
            raise ValueError(
                "ppo_loss and bc_loss must wrap the same actor: Eq. 7 trains one policy "
                "with both terms."
            )
        super().__init__()
        self.ppo_loss = ppo_loss
        self.bc_loss = bc_loss
        self.schedule = schedule if schedule is not None else TanhWarmup(40_000)
        self.scale_critic = scale_critic
        self.advance_schedule = advance_schedule
        self.check_finite = check_finite
        self.demo_buffer = demo_buffer
        self.demo_batch_size = demo_batch_size

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    @property
    def precision(self) -> str:
        """The sub-losses' precision (checked equal at construction)."""
        return self.ppo_loss.precision

    @property
    def beta(self) -> float:
        """The current ``beta_t``."""
        return self.schedule()

    @property
    def in_keys(self):
        return list(dict.fromkeys([*self.ppo_loss.in_keys, *self.bc_loss.in_keys]))

    @property
    def out_keys(self):
        return [
            "loss_objective",
            "loss_entropy",
            "loss_critic",
            "loss_bc",
            "beta",
            "ppo_objective",
            "ppo_entropy",
        ]

    def sample_demo(self, device: torch.device | None = None) -> TensorDictBase:
        """A demo batch from ``demo_buffer``, on ``device`` when given."""
        if self.demo_buffer is None:
            raise ValueError(
                "PPOBCLoss needs a demo batch (Eq. 7): call loss(rollout, demo), or build it "
                "with demo_buffer=... to sample one inside. For PPO alone use ChunkClipPPOLoss."
            )
        if self.demo_batch_size is None:
            demo = self.demo_buffer.sample()
        else:
            demo = self.demo_buffer.sample(self.demo_batch_size)
        return demo if device is None else demo.to(device)

    def forward(self, rollout: TensorDictBase, demo: TensorDictBase | None = None) -> TensorDict:
        if demo is None:
            demo = self.sample_demo(rollout.device)
        beta = self.beta
        ppo = self.ppo_loss(rollout)
        bc = self.bc_loss(demo)

        out = TensorDict({}, batch_size=[])
        for key, value in ppo.items():
            if not key.startswith("loss_"):
                out.set(key, value)
        for key, value in bc.items():
            if not key.startswith("loss_"):
                out.set(key, value)

        out.set("loss_objective", beta * ppo["loss_objective"])
        out.set("ppo_objective", ppo["loss_objective"].detach())
        if "loss_entropy" in ppo.keys():
            out.set("loss_entropy", beta * ppo["loss_entropy"])
            out.set("ppo_entropy", ppo["loss_entropy"].detach())
        if "loss_critic" in ppo.keys():
            critic = ppo["loss_critic"]
            out.set("loss_critic", beta * critic if self.scale_critic else critic)
        out.set("loss_bc", bc["loss_bc"])
        out.set("beta", torch.tensor(beta))

        if self.check_finite:
            keys = [k for k in out.keys() if k.startswith("loss_")]
            finite = torch.stack([torch.isfinite(out[k]).all() for k in keys])
            if not finite.all():  # one host sync for all the terms
                key = keys[int((~finite).nonzero()[0, 0])]
                raise FloatingPointError(
                    f"PPOBCLoss: {key} is not finite ({out[key].detach().flatten()[:4].tolist()}"
                    f" at beta={beta:.4f}). Check the rollout's rewards/advantages and the "
                    "demo batch for NaN/inf, and the learning rate. Nothing was back-propagated."
                )
        if self.advance_schedule == "per_update":
            self.schedule.step(1)
        return out
