r"""Post-train the VLA policies of TorchRL 0.14 (``torchrl.modules.vla``) with the chunk losses.

TorchRL's VLA stack (:class:`~torchrl.modules.vla.VLAWrapperBase`, the reference
:class:`~torchrl.modules.vla.TinyVLA`, :class:`~torchrl.modules.vla.LeRobotPolicyWrapper`)
maps ``(image, state, language instruction)`` to either a *continuous* action chunk
``("vla_action", "chunk")`` ``[B, h, action_dim]`` or *discrete* action tokens. Only the
token head has a distribution: ``VLAWrapperBase.get_dist`` returns
``Independent(Categorical(logits), 2)`` over the ``h * action_dim`` tokens and raises for
the continuous head ("a deterministic regressor"). So a continuous VLA has no
chunk-level log-probability, and neither :class:`~torchrl_chunk.objectives.ChunkClipPPOLoss`
(the ratio of Eq. 3) nor :class:`~torchrl_chunk.objectives.SelfBCLoss` (the likelihood of
Eq. 6) can train it. This module is that missing piece, written by hand.

**The policy** is a Gaussian over the whole chunk (Eq. 1) whose mean *is the VLA's own
continuous output* (its pretrained action head kept, nothing new in front of it) and whose
scale is a learned, state-independent ``log sigma`` of shape ``[h, action_dim]``:

.. math::
    \pi_\theta(a_{t:t+h-1} \mid o_t)
        = \prod_{j<h} \prod_{d<A} \mathcal{N}\big(a_{t+j,d};\ \mu_\theta(o_t)_{j,d},\ \sigma_{j,d}^2\big),
    \qquad \mu_\theta(o_t) = \mathrm{head}\big(\mathrm{trunk}(\mathrm{enc}(o_t))\big),

    \log \pi_\theta(a_{t:t+h-1} \mid o_t) = -\sum_{j,d} \Big[\frac{(a_{t+j,d} - \mu_{j,d})^2}{2\sigma_{j,d}^2}
        + \log \sigma_{j,d} + \tfrac12 \log 2\pi\Big],

one *joint* scalar per chunk (``IndependentNormal`` with ``event_dim=2``). Acting
deterministically (evaluation) returns ``mu``: exactly what the VLA alone would do.

**The critic** is one ``Linear`` (:class:`~torchrl_chunk.modules.heads.ValueHead`) on the
VLA trunk's features, ``V_phi(o_t) = w^T trunk(enc(o_t)) + b``: the backbone is shared
(the paper's Fig. 1(a)), so the critic's gradient also shapes the trunk and encoders.
The features are caught with a forward hook on the trunk while the VLA runs *its own*
forward (the public ``VLAWrapperBase`` contract, keys from ``vla.tensor_keys``): one VLA
pass yields both ``mu`` and the features. That pass is one ``TensorDictModule`` held by
actor and critic alike, so ``ChunkClipPPOLoss`` finds it and runs it once per loss
forward (:mod:`~torchrl_chunk.objectives.shared_backbone`).

**Observations** (this module imports no simulator; these are the keys our MetaWorld
envs write, all configurable):

* ``("observation", "image")`` uint8 ``[*B, H, W, 3]`` -> the VLA's image key, permuted
  to ``[B, 3, H, W]`` (``image_layout="CHW"`` passes it as is);
* ``("observation", "state")`` ``[*B, D]`` -> the VLA's state key (only when
  ``vla.use_state``), optionally standardised by ``state_stats=(mean, std)`` first
  (TinyVLA feeds raw state to its MLP);
* ``("observation", "task_id")`` int ``[*B, 1]`` -> the VLA's language instruction, a
  string per sample looked up in ``instructions`` (a sequence or mapping indexed by task
  id, e.g. the tasks' English prompts); ``instructions="..."`` (one string) uses it for
  every sample and reads no task id. Keeping the string out of the batch keeps every
  batch all-tensor (buffers, reshapes, the shared-backbone replay); TinyVLA hashes the
  string into its text embedding.

All leading batch dims are flattened into one for the VLA (TinyVLA takes ``[B, ...]``
only) and restored after. The VLA runs outside ``torch.vmap`` only: build
``ChunkClipPPOLoss(..., deactivate_vmap=True)``.

Lazy layers (TinyVLA's ``LazyLinear`` image projection and action head) must exist before
an optimiser or a functional loss snapshots the parameters: pass ``example=`` (an
observation batch, e.g. ``env.reset()``) and :func:`make_vla_actor_critic` runs it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from tensordict import NonTensorStack, TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import IndependentNormal, ProbabilisticActor

from torchrl_chunk._deprecation import renamed_attribute, renamed_kwarg
from torchrl_chunk.keys import ACTION_KEY, IMAGE_KEY, SAMPLE_LOG_PROB_KEY, STATE_KEY, TASK_ID_KEY
from torchrl_chunk.modules.heads import EMBEDDING_KEY, ValueHead, check_log_std_range

#: Where the VLA backbone writes its continuous chunk (the Gaussian's mean) in the batch.
#: Not ``("vla_action", "chunk")``: that key holds the *demo* chunk SelfBCLoss clones.
VLA_LOC_KEY = "vla_loc"

Instructions = str | Sequence[str] | Mapping[int, str] | None


def _is_lazy(module: nn.Module) -> bool:
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters())


class VLAChunkBackbone(nn.Module):
    """One pass of a continuous TorchRL VLA: ``(image, [state], [task_id]) -> (mu, features)``.

    ``mu`` ``[*B, h, action_dim]`` is the VLA's action chunk (its public forward, read at
    ``vla.tensor_keys.action_chunk``); ``features`` ``[*B, D]`` is the output of the VLA's
    ``feature_module`` during that same forward (TinyVLA: ``trunk``). See the module
    docstring for the observation mapping.

    Args:
        vla: a :class:`~torchrl.modules.vla.VLAWrapperBase` with the continuous head,
            ``input_mode="canonical"`` and an output mode that writes the chunk.

    Keyword Args:
        instructions: the language instruction per task id (sequence or mapping), one
            string for every sample, or ``None`` (``"task <id>"``).
        feature_module: the submodule whose output the critic reads (a dotted name in
            ``vla`` or the module); it must run exactly once per VLA forward.
        state_stats: ``(mean, std)`` of the state, standardised (and clipped to
            ``+-clip``) before the VLA sees it; ``None`` passes the raw state.
        image_layout: ``"HWC"`` (the env's ``[*B, H, W, 3]``) or ``"CHW"``.
        clip: see ``state_stats``.
    """

    def __init__(
        self,
        vla: nn.Module,
        *,
        instructions: Instructions = None,
        feature_module: str | nn.Module = "trunk",
        state_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
        image_layout: Literal["HWC", "CHW"] = "HWC",
        clip: float = 10.0,
    ) -> None:
        super().__init__()
        _check_vla(vla)
        if image_layout not in ("HWC", "CHW"):
            raise ValueError(f"image_layout must be 'HWC' or 'CHW', got {image_layout!r}.")
        self.vla = vla
        self.image_layout = image_layout
        self.use_state = bool(getattr(vla, "use_state", False)) and vla.tensor_keys.state is not None
        if isinstance(instructions, str):
            self.instructions: Instructions = instructions
        elif instructions is None or isinstance(instructions, Mapping):
            self.instructions = None if instructions is None else {int(k): str(v) for k, v in instructions.items()}
        else:
            self.instructions = [str(s) for s in instructions]
        self.reads_task_id = not isinstance(self.instructions, str)
        self._feature_path = self._resolve_feature_module(feature_module)
        self.clip = clip
        if state_stats is not None:
            mean, std = (torch.as_tensor(t, dtype=torch.float32) for t in state_stats)
            if mean.shape != std.shape or mean.ndim != 1 or (std <= 0).any():
                raise ValueError("state_stats must be (mean, std), 1-D, equal-shaped, std > 0.")
            self.register_buffer("state_mean", mean.clone())
            self.register_buffer("state_std", std.clone())
        else:
            self.register_buffer("state_mean", None)
            self.register_buffer("state_std", None)

    def _resolve_feature_module(self, feature_module: str | nn.Module) -> str:
        names = dict(self.vla.named_modules())
        if isinstance(feature_module, nn.Module):
            found = [n for n, m in names.items() if m is feature_module and n]
            if not found:
                raise ValueError("feature_module is not a submodule of the VLA.")
            return found[0]
        if feature_module not in names or not feature_module:
            children = ", ".join(n for n, _ in self.vla.named_children())
            raise ValueError(
                f"The VLA {type(self.vla).__name__} has no submodule {feature_module!r} to read the "
                f"critic's features from; pass feature_module= one of its submodules ({children})."
            )
        return feature_module

    @property
    def feature_module(self) -> nn.Module:
        return self.vla.get_submodule(self._feature_path)

    def _instruction_strings(self, task_id: torch.Tensor | None, n: int) -> NonTensorStack:
        if not self.reads_task_id:
            strings = [self.instructions] * n
        else:
            ids = task_id.reshape(n, -1)[:, 0].tolist()
            table = self.instructions
            if table is None:
                return NonTensorStack(*[f"task {i}" for i in ids])
            valid = table.keys() if isinstance(table, dict) else range(len(table))
            missing = sorted({i for i in ids if i not in valid})
            if missing:
                known = sorted(valid) if isinstance(table, dict) else f"0..{len(table) - 1}"
                raise ValueError(f"task id {missing[0]} has no instruction: the table covers ids {known}.")
            strings = [table[i] for i in ids]
        return NonTensorStack(*strings)

    def forward(self, image: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rest = list(rest)
        state = rest.pop(0) if self.use_state else None
        task_id = rest.pop(0) if self.reads_task_id else None
        batch = image.shape[:-3]
        n = batch.numel()
        image = image.reshape(n, *image.shape[-3:])
        if self.image_layout == "HWC":
            image = image.permute(0, 3, 1, 2)
        keys = self.vla.tensor_keys
        vla_in = TensorDict({}, batch_size=[n])
        vla_in.set(keys.image, image)
        if state is not None:
            state = state.reshape(n, state.shape[-1])
            if self.state_mean is not None:
                state = ((state.float() - self.state_mean) / self.state_std).clamp(-self.clip, self.clip)
            vla_in.set(keys.state, state)
        vla_in.set(keys.instruction, self._instruction_strings(task_id, n))

        caught: list[torch.Tensor] = []
        hook = self.feature_module.register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            out = self.vla(vla_in)
        finally:
            hook.remove()
        if len(caught) != 1 or not isinstance(caught[0], torch.Tensor):
            raise RuntimeError(
                f"The VLA's feature_module {self._feature_path!r} ran {len(caught)} times (or returned no "
                "tensor) in one forward; the critic needs one feature tensor per sample."
            )
        features = caught[0].reshape(*batch, -1)
        loc = out.get(keys.action_chunk)
        return loc.reshape(*batch, *loc.shape[-2:]), features


class VLAChunkScale(nn.Module):
    """The actor's head on the VLA's chunk ``mu``: ``mu -> (mu, sigma)``, both ``[*B, h, A]``.

    ``sigma = exp(clamp(log_std))`` with ``log_std`` a learned ``[h, A]`` parameter (state
    independent, as in :class:`~torchrl_chunk.modules.heads.ChunkGaussianHead`). Both
    outputs are fp32, also under bf16 autocast (the log-probs and the ratio of Eq. 3).
    ``chunk_size`` (``h``) is what ``ChunkClipPPOLoss`` checks its own ``chunk_size`` against
    (``horizon`` is the deprecated old name, of the keyword and the attribute).
    """

    horizon = renamed_attribute("horizon", "chunk_size")

    @renamed_kwarg("horizon", "chunk_size")
    def __init__(
        self, chunk_size: int, action_dim: int, *, log_std_init: float = -1.0,
        log_std_min: float = -5.0, log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        if chunk_size < 1 or action_dim < 1:
            raise ValueError(f"chunk_size and action_dim must be >= 1, got {chunk_size} and {action_dim}.")
        check_log_std_range(log_std_init, log_std_min, log_std_max)
        self.chunk_size = chunk_size
        self.action_dim = action_dim
        self.log_std = nn.Parameter(torch.full((chunk_size, action_dim), float(log_std_init)))
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if loc.shape[-2:] != (self.chunk_size, self.action_dim):
            raise ValueError(
                f"The VLA emitted chunks of shape {tuple(loc.shape[-2:])}, the policy is built for "
                f"({self.chunk_size}, {self.action_dim})."
            )
        loc = loc.float()
        scale = self.log_std.clamp(self.log_std_min, self.log_std_max).exp().expand_as(loc)
        return loc, scale


def _check_vla(vla: nn.Module) -> None:
    for attr in ("tensor_keys", "chunk_size", "action_dim", "action_head"):
        if not hasattr(vla, attr):
            raise TypeError(
                f"Expected a torchrl.modules.vla.VLAWrapperBase (e.g. TinyVLA), got {type(vla).__name__} "
                f"without {attr!r}. For a backbone writing 'embedding', use make_chunk_actor_critic."
            )
    if vla.action_head != "continuous":
        raise ValueError(
            f"make_vla_actor_critic needs the VLA's continuous chunk head, got action_head="
            f"{vla.action_head!r}: a token VLA already has a distribution (VLAWrapperBase.get_dist)."
        )
    if getattr(vla, "input_mode", "canonical") != "canonical":
        raise ValueError("make_vla_actor_critic feeds the VLA's canonical keys: build it with input_mode='canonical'.")
    if getattr(vla, "output_mode", "chunk") not in ("chunk", "both"):
        raise ValueError(
            f"The VLA must write its continuous chunk (output_mode 'chunk' or 'both'), got {vla.output_mode!r}."
        )


@renamed_kwarg("horizon", "chunk_size")
def make_vla_actor_critic(
    vla: nn.Module,
    *,
    chunk_size: int,
    action_dim: int,
    instructions: Instructions = None,
    feature_module: str | nn.Module = "trunk",
    embed_dim: int | None = None,
    log_std_init: float = -1.0,
    state_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    example: TensorDictBase | None = None,
    image_key: NestedKey = IMAGE_KEY,
    state_key: NestedKey = STATE_KEY,
    task_key: NestedKey = TASK_ID_KEY,
    image_layout: Literal["HWC", "CHW"] = "HWC",
) -> tuple[ProbabilisticActor, TensorDictSequential]:
    """A chunk actor and a critic sharing one continuous TorchRL VLA (see the module docstring).

    Args:
        vla: a continuous :class:`~torchrl.modules.vla.VLAWrapperBase`, e.g.
            ``TinyVLA(action_dim=4, chunk_size=4)``.

    Keyword Args:
        chunk_size, action_dim: the chunk size ``h`` and action size the losses and the env
            use; they must equal ``vla.chunk_size`` and ``vla.action_dim`` (``ValueError``).
            ``horizon=`` is the deprecated old name of ``chunk_size``.
        instructions, feature_module, state_stats, image_layout: see
            :class:`VLAChunkBackbone`.
        embed_dim: size of the features; ``None`` reads it from ``example``'s pass or
            ``vla.hidden_dim``.
        log_std_init: initial ``log sigma`` of the chunk Gaussian.
        example: an observation batch with the keys below; run once (no gradient) to
            create the VLA's lazy layers. Required while the VLA has any.
        image_key, state_key, task_key: the batch's observation keys.

    Returns:
        ``(actor, critic)`` as :func:`~torchrl_chunk.modules.make_chunk_actor_critic`
        returns them: the actor samples ``"action"`` ``[*B, h, A]`` and writes
        ``"action_log_prob"`` ``[*B]`` (and ``"loc"``, ``"scale"``, ``"embedding"``); the
        critic writes ``"state_value"`` ``[*B, 1]``. Both contain the same backbone module
        (``actor.module[0].module[0]``), so ``ChunkClipPPOLoss`` runs the VLA once.
    """
    _check_vla(vla)
    if (vla.chunk_size, vla.action_dim) != (chunk_size, action_dim):
        raise ValueError(
            f"The VLA emits chunks of {vla.chunk_size} actions of size {vla.action_dim}, but the policy is "
            f"asked for chunk_size={chunk_size}, action_dim={action_dim}: build the VLA with chunk_size={chunk_size}, "
            f"action_dim={action_dim} (the env's and the loss's h)."
        )
    core = VLAChunkBackbone(
        vla, instructions=instructions, feature_module=feature_module, state_stats=state_stats,
        image_layout=image_layout,
    )
    in_keys = [image_key]
    if core.use_state:
        in_keys.append(state_key)
    if core.reads_task_id:
        in_keys.append(task_key)
    backbone = TensorDictModule(core, in_keys=in_keys, out_keys=[VLA_LOC_KEY, EMBEDDING_KEY])
    if example is not None:
        with torch.no_grad():
            embed = backbone(example.select(*in_keys, strict=True).clone(False)).get(EMBEDDING_KEY)
        embed_dim = embed_dim if embed_dim is not None else embed.shape[-1]
    if _is_lazy(vla):
        raise ValueError(
            f"The VLA {type(vla).__name__} still has lazy (uninitialised) layers: pass example= an "
            "observation batch (e.g. env.reset()) so they are created before a loss or an optimiser "
            "takes the parameters."
        )
    if embed_dim is None:
        embed_dim = getattr(vla, "hidden_dim", None)
    if embed_dim is None:
        raise ValueError("Cannot tell the feature size: pass embed_dim= or example=.")
    return loc_actor_critic(backbone, chunk_size=chunk_size, action_dim=action_dim, embed_dim=int(embed_dim),
                            log_std_init=log_std_init)


@renamed_kwarg("horizon", "chunk_size")
def loc_actor_critic(backbone: TensorDictModule, *, chunk_size: int, action_dim: int, embed_dim: int,
                     log_std_init: float = -1.0) -> tuple[ProbabilisticActor, TensorDictSequential]:
    """Actor and critic around a backbone that writes the policy's own chunk (``VLA_LOC_KEY``,
    the Gaussian's mean) and its features (``"embedding"``, the value head's input): the shared
    part of :func:`make_vla_actor_critic` and ``lerobot_act.make_act_actor_critic``."""
    scale = TensorDictModule(
        VLAChunkScale(chunk_size, action_dim, log_std_init=log_std_init), in_keys=[VLA_LOC_KEY], out_keys=["loc", "scale"]
    )
    actor = ProbabilisticActor(
        TensorDictSequential(backbone, scale),
        in_keys=["loc", "scale"],
        out_keys=[ACTION_KEY],
        distribution_class=IndependentNormal,
        distribution_kwargs={"event_dim": 2},  # joint log-prob over (h, action_dim): Eq. 3 / Eq. 6
        return_log_prob=True,
        log_prob_key=SAMPLE_LOG_PROB_KEY,
    )
    critic = TensorDictSequential(
        backbone, TensorDictModule(ValueHead(embed_dim), in_keys=[EMBEDDING_KEY], out_keys=["state_value"])
    )
    return actor, critic


def vla_chunk_scale(actor: nn.Module) -> VLAChunkScale:
    """The :class:`VLAChunkScale` (``log_std``) of an actor made by :func:`make_vla_actor_critic`."""
    heads = [m for m in actor.modules() if isinstance(m, VLAChunkScale)]
    if len(heads) != 1:
        raise ValueError(f"Expected one VLAChunkScale in the actor, found {len(heads)}.")
    return heads[0]


__all__ = ["VLA_LOC_KEY", "VLAChunkBackbone", "VLAChunkScale", "make_vla_actor_critic", "vla_chunk_scale"]
