"""Action-chunked PPO (Section II.A, Eq. 2-5)."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDictBase
from tensordict.nn import dispatch
from tensordict.utils import NestedKey
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.utils import ValueEstimators

from torchrl_chunk._deprecation import renamed_attribute, renamed_kwarg
from torchrl_chunk.keys import STEPS_EXECUTED_KEY
from torchrl_chunk.precision import Precision, check_precision, loss_autocast
from torchrl_chunk.objectives.shared_backbone import (
    BackboneReuse,
    shared_modules,
    shared_param_mode,
)

DiscountMode = Literal["chunk", "step"]

_ACTOR_HINT = (
    "Build the actor so that its distribution's log_prob sums over the chunk AND the "
    "action dims, e.g. ProbabilisticActor(..., distribution_class=IndependentNormal, "
    "distribution_kwargs={'event_dim': 2}) (TanhNormal spells it 'event_dims': 2), or use "
    "torchrl_chunk.modules.make_chunk_actor_critic, which does this."
)


def _build_estimator_to_load(module, state_dict, prefix, *args) -> None:
    """A saved loss holds its (lazily built) estimator's buffers: build it before loading."""
    if module._value_estimator is None and any(
        k.startswith(prefix + "_value_estimator.") for k in state_dict
    ):
        module._default_value_estimator()


def _check_chunk_data(estimator, args, kwargs, *, steps_key, needs_steps: bool, chunked: bool) -> None:
    """Forward pre-hook of the loss's value estimator: refuse data TorchRL's estimators would
    silently misread (one reward per env step, or rewards of part of the chunk only)."""
    tensordict = args[0] if args else kwargs.get("tensordict")
    if not isinstance(tensordict, TensorDictBase):
        return
    reward = tensordict.get(("next", *_as_tuple(estimator.tensor_keys.reward)), None)
    if chunked and reward is not None and reward.ndim > tensordict.batch_dims + 1:
        raise ValueError(
            f"The batch holds one reward per env step of each chunk (reward shape {tuple(reward.shape)}, "
            f"batch {tuple(tensordict.batch_size)}), e.g. from TorchRL's MultiAction(stack_rewards=True); "
            "the chunk losses need one reward per decision, summed over the executed steps, and their "
            "count: wrap the env in torchrl_chunk.envs.ChunkedEnv instead."
        )
    if needs_steps and tensordict.get(steps_key, None) is None:
        raise KeyError(
            f"The batch has no executed-step count per chunk under {steps_key!r}: without it the "
            "discount (discount='step') or the reward's coverage of the chunk (MultiAction keeps the "
            "last step's reward only) cannot be checked. Collect through torchrl_chunk.envs.ChunkedEnv, "
            "or loss.set_keys(steps_to_next_obs=...) to where your env writes the count."
        )


def _as_tuple(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


class _UnderPrecision:
    """A value estimator called under its loss's precision (attributes pass through)."""

    def __init__(self, estimator, loss: ChunkClipPPOLoss) -> None:
        self._estimator, self._loss = estimator, loss

    def __call__(self, tensordict: TensorDictBase, *args, **kwargs):
        with loss_autocast(self._loss.precision, tensordict, self._loss):
            return self._estimator(tensordict, *args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # e.g. before __init__ ran (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._estimator, name)


def _declared_chunk_size(module) -> int | None:
    """A module's integer ``chunk_size``, or (a module of the user's written before the rename)
    an integer ``horizon`` it stores itself; read without touching deprecated properties."""
    for value in (getattr(module, "chunk_size", None), vars(module).get("horizon")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _actor_chunk_size(actor) -> int | None:
    """The chunk size an actor declares (a submodule with an integer ``chunk_size``), if any."""
    found = {_declared_chunk_size(m) for m in actor.modules() if m is not actor} - {None}
    return found.pop() if len(found) == 1 else None


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

    * **validation** (for ``chunk_size`` ``None`` or ``> 1``): the actor's log-prob must be
      one scalar per advantage entry (the joint chunk likelihood). An actor whose
      distribution has an event over the action dim only (TorchRL's default
      ``event_dim=1``) yields ``[*B, h]`` log-probs, which the parent silently turns into
      per-action PPO; here it raises ``ValueError``, as does an action with fewer dims
      than the policy's samples (it would be broadcast). With ``chunk_size=h > 1`` the
      action must be ``[*B, h, action_dim]``. ``chunk_size=1`` skips every check: the loss
      is then ``ClipPPOLoss`` itself and accepts all it accepts (per-step actions,
      composite distributions, multi-agent batches, ``reduction``, asymmetric
      ``clip_epsilon``, ``functional=False``, ...). ``chunk_size=None`` does too, except
      token-level ratios (several log-probs per advantage entry).
    * **paper defaults**: ``clip_epsilon=0.2``, clipped value loss with the same 0.2,
      ``loss_critic_type="l2"`` (squared error), ``critic_coeff=0.5``,
      ``entropy_coeff=0.0``, GAE with ``gamma=0.99``, ``lmbda=0.95`` (TorchRL's are
      ``clip_value=None``, ``"smooth_l1"``, ``1.0``, ``0.01``; pass them to get its
      numbers).
    * **discount per chunk or per step** (Eq. 5):

      - ``discount="chunk"`` (the paper): one factor ``gamma`` per chunk decision;
      - ``discount="step"``: ``gamma ** k`` with ``k`` the number of env steps actually
        executed by the chunk (``("next", "steps_executed")``, written by
        :class:`~torchrl_chunk.envs.ChunkedEnv`), via the value estimator's
        ``steps_to_next_obs`` key. This is the semi-MDP discount: a chunk cut short by
        termination is discounted less. The key is the loss's ``steps_to_next_obs``
        (``set_keys``) and is passed on to every estimator ``make_value_estimator``
        builds.

    Two additions that leave the maths unchanged:

    * **one backbone pass** (``shared_backbone``): when actor and critic are built around
      the same backbone module (Fig. 1(a); ``make_chunk_actor_critic`` with
      ``critic_backbone=None``), the backbone runs once per forward and its embedding
      feeds both heads (:mod:`~torchrl_chunk.objectives.shared_backbone`): the gradient
      is the same (the backbone still gets actor + critic gradient), the cost of an
      update drops from about two actor passes to one. With ``separate_losses=True`` the
      critic gets the embedding detached, as TorchRL's two passes would give it. The
      embedding is always computed in this forward; an ``"embedding"`` stored in the
      batch (e.g. by the collector) is never read.
    * **precision** (``"fp32"`` or ``"bf16"``): ``"bf16"`` runs the forward (including a
      value estimator it calls) under bf16 autocast; parameters stay fp32 and the heads,
      hence log-probs, the ratio of Eq. 3 and the values, are fp32
      (:mod:`torchrl_chunk.modules.precision`).

    Termination and truncation follow TorchRL's GAE: ``("next", "terminated")`` stops the
    bootstrap (``V(o_{t+1}) = 0``), a truncation at the time limit (``done`` without
    ``terminated``) bootstraps from ``V(o_{t+1})``.

    Args:
        actor_network: a probabilistic actor whose ``log_prob`` is the joint chunk
            log-likelihood (see :func:`torchrl_chunk.modules.make_chunk_actor_critic`).
        critic_network: the value network writing ``"state_value"``.

    Keyword Args:
        chunk_size: the chunk size ``h`` (the paper's action horizon); ``h > 1`` is checked
            against the action, ``1`` makes the loss plain ``ClipPPOLoss`` (see above).
            ``horizon=`` is its deprecated old name.
        discount: ``"chunk"`` or ``"step"``, see above.
        gamma, lmbda: GAE discount and lambda.
        deactivate_vmap: evaluate the critic in GAE without ``torch.vmap`` (needed for
            critics whose layers vmap does not support, e.g. convolutions).
        shared_backbone: ``None`` (default) runs the backbone once when actor and critic
            share it and twice otherwise; ``True`` requires the shared backbone (one
            pass; ``ValueError`` if there is none); ``False`` always runs actor and
            critic separately, as ``ClipPPOLoss`` does.
        precision: ``"fp32"`` (default) or ``"bf16"``, see above.
        clip_epsilon, clip_value, loss_critic_type, critic_coeff, entropy_coeff: as in
            ``ClipPPOLoss``; defaults are the paper's.
        **kwargs: any other ``ClipPPOLoss`` keyword (``normalize_advantage``,
            ``separate_losses``, ``functional``, ``reduction``, ...).

    Keys (``set_keys``): ClipPPOLoss's (``advantage``, ``value_target``, ``value``,
    ``sample_log_prob``, ``action``, ``reward``, ``done``, ``terminated``) and
    ``steps_to_next_obs`` (default ``("next", "steps_executed")``: the value estimator
    discounts by it when ``discount="step"``, and for ``chunk_size`` > 1 it must be in the batch
    whatever the discount, as the sign that each decision's reward covers its executed steps;
    TorchRL's ``MultiAction`` data is refused with the way out, ``ChunkedEnv``).

    Attributes: ``chunk_size`` (``h``, as given; ``horizon`` is its deprecated alias);
    ``shared_backbone`` (bool, read-only) says whether the one-pass path is on;
    ``precision`` can be changed between updates.

    Outputs: ``loss_objective``, ``loss_critic``, ``loss_entropy`` (sum them) and the
    parent's detached diagnostics: ``clip_fraction`` (share of clipped ratios),
    ``kl_approx`` (mean ``log pi_old - log pi``), ``entropy`` (mean policy entropy),
    ``explained_variance`` (``1 - Var(R - V) / Var(R)``, shape ``[1]``),
    ``value_clip_fraction``, ``ESS``, ``max_ratio``, ``mean_ratio``. None of them syncs
    with the host.

    Example:
        >>> actor, critic = make_chunk_actor_critic(backbone, 64, chunk_size=4, action_dim=4)
        >>> loss = ChunkClipPPOLoss(actor, critic, chunk_size=4)
        >>> with torch.no_grad():
        ...     loss.value_estimator(rollout)  # GAE: writes advantage and value_target
        >>> out = loss(rollout.reshape(-1))
        >>> (out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]).backward()
    """

    @dataclass
    class _AcceptedKeys(ClipPPOLoss._AcceptedKeys):
        """ClipPPOLoss's keys plus the executed-steps count.

        Attributes:
            steps_to_next_obs: env steps executed by each chunk ``[*B, 1]``; the value
                estimator discounts by ``gamma ** k`` when ``discount="step"``.
                Defaults to ``("next", "steps_executed")``.
        """

        steps_to_next_obs: NestedKey = ("next", STEPS_EXECUTED_KEY)

    default_keys = _AcceptedKeys
    tensor_keys: _AcceptedKeys

    horizon = renamed_attribute("horizon", "chunk_size")

    @renamed_kwarg("horizon", "chunk_size")
    def __init__(
        self,
        actor_network=None,
        critic_network=None,
        *,
        chunk_size: int | None = None,
        discount: DiscountMode = "chunk",
        gamma: float = 0.99,
        lmbda: float = 0.95,
        clip_epsilon: float | tuple[float, float] = 0.2,
        clip_value: bool | float | None = True,
        loss_critic_type: str = "l2",
        critic_coeff: float | None = 0.5,
        entropy_coeff: float | None = 0.0,
        deactivate_vmap: bool = False,
        shared_backbone: bool | None = None,
        precision: Precision = "fp32",
        **kwargs,
    ) -> None:
        if shared_backbone not in (None, True, False):
            raise ValueError(f"shared_backbone must be None, True or False, got {shared_backbone!r}.")
        check_precision(precision)
        if discount not in ("chunk", "step"):
            raise ValueError(f"discount must be 'chunk' or 'step', got {discount!r}.")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
        if not 0.0 <= gamma <= 1.0 or not 0.0 <= lmbda <= 1.0:
            raise ValueError(f"gamma and lmbda must lie in [0, 1], got gamma={gamma}, lmbda={lmbda}.")
        self.discount = discount  # read by the key hooks that ClipPPOLoss.__init__ runs
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
        self.chunk_size = chunk_size
        declared = (_actor_chunk_size(actor_network)
                    if chunk_size not in (None, 1) and actor_network is not None else None)
        if declared is not None and declared != chunk_size:
            raise ValueError(
                f"ChunkClipPPOLoss(chunk_size={chunk_size}) got an actor built for chunks of {declared}: "
                "use the same chunk_size h for the policy, the env and the loss.")
        self._gae_kwargs = {"gamma": gamma, "lmbda": lmbda, "deactivate_vmap": deactivate_vmap}
        self.register_load_state_dict_pre_hook(_build_estimator_to_load)
        self.precision = precision
        self._in_forward = False
        self._reuse = self._backbone_reuse(shared_backbone)

    # -- one backbone pass, precision ---------------------------------------------------
    def _backbone_reuse(self, shared_backbone: bool | None) -> BackboneReuse | None:
        """The recorder of the shared backbone, or ``None`` for two passes."""
        if shared_backbone is False:
            return None
        modules = shared_modules(self.actor_network, self.critic_network) if self._has_critic else []
        modes = {shared_param_mode(self, m) for m in modules}
        if modules and len(modes) == 1 and None not in modes:
            return BackboneReuse(modules, detach=modes.pop() == "detached")
        if shared_backbone:
            why = (
                "they share no module with parameters"
                if not modules
                else "the critic binds the shared module to other parameters than the actor"
            )
            raise ValueError(
                f"shared_backbone=True needs actor and critic around one backbone, but {why}; "
                "build them with make_chunk_actor_critic(..., critic_backbone=None)."
            )
        return None

    @property
    def shared_backbone(self) -> bool:
        """Whether the backbone runs once per forward (see the class docstring)."""
        return self._reuse is not None

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    @property
    def value_estimator(self):
        """The value estimator (GAE by default), run under the loss's precision: with
        ``precision="bf16"`` calling it enters bf16 autocast itself (the critic's backbone in
        bf16, its value head and the targets fp32), so a loop needs no autocast of its own."""
        estimator = super().value_estimator
        if self._precision == "fp32" or estimator is None:
            return estimator
        return _UnderPrecision(estimator, self)

    @value_estimator.setter
    def value_estimator(self, value) -> None:
        self._value_estimator = value

    def loss_critic(self, tensordict: TensorDictBase):
        """ClipPPOLoss's value loss (Eq. 4); inside :meth:`forward` with a shared
        backbone, the critic reuses the embedding the actor computed on this batch."""
        reuse = self._reuse if self._in_forward else None
        with reuse.replaying() if reuse is not None else contextlib.nullcontext():
            return super().loss_critic(tensordict)

    # -- keys and value estimator -----------------------------------------------------
    def _default_value_estimator(self) -> None:
        """GAE with this loss's ``gamma`` and ``lmbda``, built on first use as in TorchRL
        (so that ``set_keys`` calls after construction are checked against the critic
        only then)."""
        self.make_value_estimator(ValueEstimators.GAE, **self._gae_kwargs)

    def make_value_estimator(self, value_type: ValueEstimators = None, **hyperparams):
        """ClipPPOLoss's, then the ``"step"`` discount's key is set on the new estimator."""
        out = super().make_value_estimator(value_type, **hyperparams)
        self._forward_steps_key()
        return out

    def _forward_steps_key(self) -> None:
        estimator = getattr(self, "_value_estimator", None)
        if estimator is None:
            return
        step_discount = getattr(self, "discount", "chunk") == "step"
        if step_discount:
            estimator.set_keys(steps_to_next_obs=self.tensor_keys.steps_to_next_obs)
        chunked = getattr(self, "chunk_size", None) not in (None, 1)
        old = getattr(estimator, "_chunk_data_check", None)
        if old is not None:
            old.remove()
        if step_discount or chunked:  # TorchRL's estimators would misread such data silently
            estimator._chunk_data_check = estimator.register_forward_pre_hook(functools.partial(
                _check_chunk_data, steps_key=self.tensor_keys.steps_to_next_obs, needs_steps=True,
                chunked=chunked), with_kwargs=True)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        super()._forward_value_estimator_keys(**kwargs)
        self._forward_steps_key()

    def _set_in_keys(self):
        super()._set_in_keys()
        if getattr(self, "discount", "chunk") == "step":
            key = self.tensor_keys.steps_to_next_obs
            if key not in self._in_keys:  # keep TorchRL's order, add the key once
                self._in_keys = [*self._in_keys, key]

    # -- validation -------------------------------------------------------------------
    @property
    def _checks_chunks(self) -> bool:
        return self.chunk_size != 1

    def _check_action(self, tensordict: TensorDictBase) -> None:
        key = self.tensor_keys.action
        if not isinstance(key, (str, tuple)):
            return  # several action heads: a composite distribution, checked by the parent
        action = tensordict.get(key, None)
        if action is None:
            raise KeyError(
                f"ChunkClipPPOLoss: the batch has no action under {key!r}. "
                "Pass the rollout collected with the chunk actor, or set_keys(action=...)."
            )
        if not isinstance(action, torch.Tensor) or self.chunk_size is None:
            return
        batch_dims = tensordict.batch_dims
        if action.ndim != batch_dims + 2:
            raise ValueError(
                f"ChunkClipPPOLoss(chunk_size={self.chunk_size}) expects actions shaped [*batch, h, "
                f"action_dim] (batch {tuple(tensordict.batch_size)}), got {tuple(action.shape)}. "
                "A single action per step is chunk_size=1."
            )
        if action.shape[-2] != self.chunk_size:
            raise ValueError(
                f"ChunkClipPPOLoss(chunk_size={self.chunk_size}) got chunks of length "
                f"{action.shape[-2]} (action shape {tuple(action.shape)}). Use the same h "
                "for the policy, the env and the loss."
            )

    def _get_cur_log_prob(self, tensordict: TensorDictBase, *args, **kwargs):
        # Arguments pass through as given: TorchRL 0.14 adds ``params`` (the proximal policy's
        # target parameters), its main branch has none. Record the shared backbone's outputs for
        # the critic with the current parameters only (target parameters are not the critic's).
        current = not args and kwargs.get("params") is None
        reuse = self._reuse if self._in_forward and current else None
        with reuse.recording() if reuse is not None else contextlib.nullcontext():
            log_prob, dist, is_composite = super()._get_cur_log_prob(tensordict, *args, **kwargs)
        if is_composite or not self._checks_chunks:
            return log_prob, dist, is_composite
        action = tensordict.get(self.tensor_keys.action)
        try:
            sample_shape = dist.batch_shape + dist.event_shape
        except (AttributeError, NotImplementedError):
            sample_shape = None
        if sample_shape is not None and action.ndim < len(sample_shape):
            raise ValueError(
                f"ChunkClipPPOLoss: the action {tuple(action.shape)} has fewer dims than the "
                f"policy's samples {tuple(sample_shape)} and would be broadcast. Store the "
                "actions the policy emitted: for a chunk policy [*batch, h, action_dim]."
            )
        # _log_weight has checked the stored log-prob against the advantage already.
        prev = tensordict.get(self.tensor_keys.sample_log_prob)
        if log_prob.shape != prev.shape:
            raise ValueError(
                f"ChunkClipPPOLoss needs one joint log-prob per chunk (shape "
                f"{tuple(prev.shape)}), but the actor returned shape "
                f"{tuple(log_prob.shape)}: its distribution treats part of the chunk as batch, "
                f"which would make this per-action PPO. {_ACTOR_HINT}"
            )
        return log_prob, dist, is_composite

    def _log_weight(self, tensordict: TensorDictBase, adv_shape: torch.Size):
        key = self.tensor_keys.sample_log_prob
        prev = tensordict.get(key, None) if isinstance(key, (str, tuple)) else None
        # An advantage without its trailing value dim is the parent's error to report.
        covers_batch = len(adv_shape) >= tensordict.batch_dims
        if (
            self._checks_chunks
            and covers_batch
            and isinstance(prev, torch.Tensor)
            and prev.shape != adv_shape
        ):
            raise ValueError(
                f"The stored log-prob {key!r} has shape {tuple(prev.shape)}, expected one "
                f"scalar per advantage entry {tuple(adv_shape)}: the actor used for "
                f"collection is not a joint-chunk actor. {_ACTOR_HINT}"
            )
        return super()._log_weight(tensordict, adv_shape)

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self._checks_chunks:
            self._check_action(tensordict)
        self._in_forward = True
        try:
            with loss_autocast(self._precision, tensordict, self):
                return super().forward(tensordict)
        finally:
            self._in_forward = False
            if self._reuse is not None:
                self._reuse.clear()  # never reused by a later forward; frees the graph
