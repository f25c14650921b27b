"""Self behaviour cloning on the demonstration buffer (Section II.B, Eq. 6)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule, dispatch
from tensordict.utils import NestedKey
from torch import distributions as D
from torchrl.objectives import LossModule

from torchrl_chunk.keys import ACTION_CHUNK_KEY, ACTION_IS_PAD_KEY
from torchrl_chunk.precision import Precision, check_precision, loss_autocast

BCForm = Literal["nll", "mse", "nll_detached_scale"]


class SelfBCLoss(LossModule):
    r"""Behaviour cloning of whole action chunks from the demo buffer (Eq. 6).

    .. math::
        \mathcal{L}_{BC}(\theta) = \mathbb{E}_{(a, o_t, p_t) \sim \mathcal{D}_{demo}}
            \big[-\log \pi_\theta(a_{t:t+h-1} \mid o_t, p_t)\big]

    ``D_demo`` is the :class:`~torchrl_chunk.data.LengthFilteredReplayBuffer`: expert
    trajectories plus the agent's own short successful ones. Each sample holds an
    observation and the chunk that followed it, ``("vla_action", "chunk")``
    ``[*B, h, action_dim]``.

    **Pad mask.** A chunk that starts fewer than ``h`` steps before its trajectory's end
    has padded tail steps, flagged ``True`` in ``"action_is_pad"`` ``[*B, h]``. They
    contribute nothing: the chunk's log-likelihood is the sum of the per-element
    log-densities over the *unpadded* steps only,

    .. math::
        \log \pi(a_{t:t+k-1} \mid o_t) = \sum_{j < k} \sum_{d} \log \pi_{j,d}(a_{t+j,d} \mid o_t),

    which for the factorised Gaussian head is exactly the marginal likelihood of the
    ``k`` real actions. Without a mask in the batch every step counts.

    **Loss form** (``loss_form``); the paper's Eq. 6 is ``"nll"``:

    * ``"nll"``: the joint negative log-likelihood above, mean over samples.
    * ``"mse"``: squared error between the policy's chunk mean and the demo chunk, mean
      over the unpadded elements of each sample, then over samples. It does not train
      the policy's scale.
    * ``"nll_detached_scale"``: the Gaussian NLL with the scale detached (needs a
      Normal-based distribution, e.g. ``IndependentNormal``): it trains the mean with
      ``1/sigma^2`` weights but leaves the scale to PPO.

    Why offer more than Eq. 6: a prototype of this method
    (``docs/guide.md``, "Choosing the BC loss form") found that the literal NLL drives
    the shared std down and its gradient, which grows as ``1/sigma^2``, swamps the PPO
    gradient on hard tasks (peg-insert-side stuck at its BC level), while MSE on the
    mean let PPO work.

    Args:
        actor_network: the same probabilistic actor PPO uses (``get_dist`` must work).

    Keyword Args:
        loss_form: ``"nll"`` (default), ``"mse"`` or ``"nll_detached_scale"``.
        coeff: multiplier of the loss (``loss_bc = coeff * L_BC``). Default 1.
        functional: store the actor's parameters functionally, as TorchRL losses do.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample losses).
        mask_padding: honour the pad mask (default ``True``); ``False`` counts every step.
        check_finite: raise ``ValueError`` naming the key when the demo chunk (its
            unpadded steps) or a floating-point observation the actor reads holds NaN or
            inf, instead of returning ``loss_bc = nan``. One host sync per call.
            Default ``True``.
        precision: ``"fp32"`` (default) or ``"bf16"``: run the actor under bf16 autocast
            (fp32 weights; the head, the distribution and the likelihood stay fp32, see
            :mod:`torchrl_chunk.modules.precision`). Settable as ``loss.precision``.

    Keys (``set_keys``): ``action`` (the demo chunk, default ``("vla_action", "chunk")``)
    and ``pad_mask`` (default ``"action_is_pad"``; a batch without the entry is unmasked).
    As everywhere in TorchRL, ``set_keys(pad_mask=None)`` restores the default key; to
    ignore the mask use ``mask_padding=False``.

    Outputs: ``loss_bc`` and the detached diagnostics ``bc_nll`` (mean joint NLL),
    ``bc_mse`` (mean squared error of the chunk mean) and, for Normal-based actors,
    ``bc_scale`` (mean policy std).

    Example:
        >>> bc = SelfBCLoss(actor, loss_form="mse")
        >>> out = bc(demo_buffer.sample(256))
        >>> out["loss_bc"].backward()
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys.

        Attributes:
            action: the demonstrated chunk ``[*B, h, action_dim]``.
            pad_mask: boolean ``[*B, h]``, ``True`` for chunk steps past the trajectory's
                end.
        """

        action: NestedKey = ACTION_CHUNK_KEY
        pad_mask: NestedKey = ACTION_IS_PAD_KEY

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    actor_network: TensorDictModule
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: TensorDictModule,
        *,
        loss_form: BCForm = "nll",
        coeff: float = 1.0,
        functional: bool = True,
        reduction: Literal["mean", "sum", "none"] | None = None,
        mask_padding: bool = True,
        check_finite: bool = True,
        precision: Precision = "fp32",
    ) -> None:
        check_precision(precision)
        if loss_form not in ("nll", "mse", "nll_detached_scale"):
            raise ValueError(
                f"loss_form must be 'nll', 'mse' or 'nll_detached_scale', got {loss_form!r}."
            )
        if not coeff >= 0:
            raise ValueError(f"coeff must be a non-negative number, got {coeff}.")
        super().__init__()
        self._functional = functional
        self._in_keys = None
        if functional:
            self.convert_to_functional(actor_network, "actor_network")
        else:
            self.actor_network = actor_network
        self.loss_form = loss_form
        self.register_buffer("coeff", torch.tensor(float(coeff)))
        self.reduction = "mean" if reduction is None else reduction
        self.mask_padding = mask_padding
        self.check_finite = check_finite
        self.precision = precision

    @property
    def precision(self) -> str:
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    @property
    def functional(self) -> bool:
        return self._functional

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def _set_in_keys(self):
        keys = [self.tensor_keys.action, *self.actor_network.in_keys]
        if self.mask_padding:
            keys.append(self.tensor_keys.pad_mask)
        self._in_keys = list(dict.fromkeys(keys))

    def set_keys(self, **kwargs) -> None:
        super().set_keys(**kwargs)
        self._in_keys = None

    @property
    def in_keys(self):
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values):
        self._in_keys = values

    @property
    def out_keys(self):
        return ["loss_bc", "bc_nll", "bc_mse", "bc_scale"]

    # -- pieces -----------------------------------------------------------------------
    def _demo_chunk(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(target [*B, h, A], valid [*B, h] bool)`` with clear errors."""
        key = self.tensor_keys.action
        target = tensordict.get(key, None)
        if target is None:
            raise KeyError(
                f"SelfBCLoss: the demo batch has no action chunk under {key!r} "
                f"(keys: {list(tensordict.keys(True, True))}). Sample it from a "
                "LengthFilteredReplayBuffer, or point set_keys(action=...) at your chunk."
            )
        if target.ndim != tensordict.batch_dims + 2:
            raise ValueError(
                f"SelfBCLoss expects demo chunks shaped [*batch, h, action_dim] (batch "
                f"{tuple(tensordict.batch_size)}), got {tuple(target.shape)} under {key!r}."
            )
        valid = torch.ones(target.shape[:-1], dtype=torch.bool, device=target.device)
        if self.mask_padding:
            pad = tensordict.get(self.tensor_keys.pad_mask, None)
            if pad is not None:
                if pad.shape != target.shape[:-1]:
                    raise ValueError(
                        f"SelfBCLoss: pad mask {self.tensor_keys.pad_mask!r} has shape "
                        f"{tuple(pad.shape)}, expected {tuple(target.shape[:-1])} ([*batch, h])."
                    )
                valid = ~pad.bool()
        return target, valid

    def _check_finite(self, tensordict: TensorDictBase, target, valid) -> None:
        """Raise on NaN/inf in the unpadded demo chunk or an observation (one host sync)."""
        # padded steps may hold anything: they never reach the loss (see forward)
        entries = {self.tensor_keys.action: torch.where(valid.unsqueeze(-1), target, 0.0)}
        for key in self.actor_network.in_keys:
            value = tensordict.get(key, None)
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                entries.setdefault(key, value)
        finite = torch.stack([torch.isfinite(v).all() for v in entries.values()])
        if not finite.all():
            key, value = [(k, v) for (k, v), ok in zip(entries.items(), finite.tolist()) if not ok][0]
            n_bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"SelfBCLoss: the demo batch holds NaN or inf under {key!r} ({n_bad} of "
                f"{value.numel()} values): keep non-finite trajectories out of the demo buffer "
                "(LengthFilteredReplayBuffer.extend rejects them as 'non_finite') or fix the "
                "demo source."
            )

    def _dist(self, tensordict: TensorDictBase) -> D.Distribution:
        ctx = (
            self.actor_network_params.to_module(self.actor_network)
            if self._functional
            else contextlib.nullcontext()
        )
        with ctx, loss_autocast(self._precision, tensordict, self):
            return self.actor_network.get_dist(tensordict)

    @staticmethod
    def _elementwise(dist: D.Distribution):
        """The per-element distribution of an ``Independent`` chunk distribution."""
        base = dist
        while isinstance(base, D.Independent):
            base = base.base_dist
        return base

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        target, valid = self._demo_chunk(tensordict)
        if self.check_finite:
            self._check_finite(tensordict, target, valid)
        dist = self._dist(tensordict)
        base = self._elementwise(dist)
        if base is dist:
            raise ValueError(
                "SelfBCLoss needs an actor whose distribution is a "
                "torch.distributions.Independent over the chunk (e.g. IndependentNormal "
                f"or TanhNormal), got {type(dist).__name__}."
            )
        mean = getattr(dist, "deterministic_sample", None)
        if mean is None:
            mean = dist.mean
        if mean.shape != target.shape:
            raise ValueError(
                f"SelfBCLoss: the policy predicts chunks of shape {tuple(mean.shape)} but "
                f"the demo chunks are {tuple(target.shape)}: chunk_size or action_dim differ "
                "between the policy and the demo buffer."
            )
        mask = valid.unsqueeze(-1).to(target.dtype)  # [*B, h, 1]
        # Padded targets are replaced by the (detached) policy mean before any maths, so
        # whatever they hold (even NaN) reaches neither the loss nor its gradient.
        target = torch.where(valid.unsqueeze(-1), target, mean.detach())
        n_valid = (mask.sum((-2, -1)) * target.shape[-1]).clamp_min(1.0)  # [*B]

        logp = base.log_prob(target)  # [*B, h, A] per-element log-density
        nll = -(logp * mask).sum((-2, -1))  # joint NLL of the unpadded steps, [*B]
        sq_err = ((mean - target) ** 2 * mask).sum((-2, -1)) / n_valid  # [*B]

        if self.loss_form == "nll":
            per_sample = nll
        elif self.loss_form == "mse":
            per_sample = sq_err
        else:  # nll_detached_scale
            if not isinstance(base, D.Normal):
                raise ValueError(
                    "loss_form='nll_detached_scale' needs a Normal-based actor "
                    f"(IndependentNormal), got a {type(base).__name__} per element."
                )
            detached = D.Normal(base.loc, base.scale.detach())
            per_sample = -(detached.log_prob(target) * mask).sum((-2, -1))

        loss = self.coeff * self._reduce_loss(per_sample, tensordict)
        out = TensorDict({"loss_bc": loss})
        out.set("bc_nll", nll.detach().mean())
        out.set("bc_mse", sq_err.detach().mean())
        if isinstance(base, D.Normal):
            out.set("bc_scale", base.scale.detach().mean())
        self._clear_weakrefs(tensordict, out, "actor_network_params")
        return out
