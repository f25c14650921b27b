r"""LeRobot's ACT (Action Chunking Transformer, ``lerobot==0.4.4``) post-trained with the chunk losses.

ACT already predicts action *chunks*: a transformer encoder reads ``[latent, (state),
(env state), (camera patches)]`` tokens, a DETR-style decoder turns ``chunk_size`` learned
queries into ``chunk_size`` actions. What it lacks for :class:`~torchrl_chunk.objectives.ChunkClipPPOLoss`
and :class:`~torchrl_chunk.objectives.SelfBCLoss` is a chunk log-likelihood and a critic;
:func:`make_act_actor_critic` adds both, exactly as :func:`~torchrl_chunk.modules.vla.make_vla_actor_critic`
does for TorchRL's ``TinyVLA``:

* **policy** -- a Gaussian over the whole chunk (Eq. 1), ``IndependentNormal(event_dim=2)``:
  its mean is ACT's own deterministic chunk (latent ``z = 0``, the way ACT acts at
  inference), ``[*B, h, action_dim]``; its scale a learned, state-independent
  ``log sigma`` ``[h, action_dim]`` (:class:`~torchrl_chunk.modules.vla.VLAChunkScale`). When
  ACT's ``chunk_size`` exceeds ours (``h``), the **first** ``h`` predicted actions
  are the mean; the decoder still computes the others (set ``chunk_size=h`` for a fresh
  model to save that work). Acting deterministically returns ACT's chunk.
* **critic** -- one ``Linear`` (:class:`~torchrl_chunk.modules.heads.ValueHead`) on ACT's
  transformer-encoder output, mean-pooled over its tokens (``[*B, dim_model]``). The
  backbone is shared (the paper's Fig. 1(a)): the value loss also trains ACT's encoder,
  state projections and ResNet. One ACT pass yields chunk and features, and
  ``ChunkClipPPOLoss`` runs it once per loss forward
  (:mod:`~torchrl_chunk.objectives.shared_backbone`).

With a camera in the config the ACT model is wrapped in TorchRL's
:class:`~torchrl.modules.vla.LeRobotPolicyWrapper` (the canonical VLA keys -> a LeRobot batch
dict ``{"observation.images.<camera>", "observation.state", "task"}``) and handed to
:func:`~torchrl_chunk.modules.vla.make_vla_actor_critic`, the ``TinyVLA`` path. The wrapper
cannot be used as is: its default call is ``predict_action_chunk``, which LeRobot runs
under ``torch.no_grad()`` and in ``eval()`` mode, and it has no log-probability (only a
token head has one, and LeRobot policies have none). We hand it :class:`ACTChunkModel`
instead, a differentiable call of ``ACTPolicy.model``. A state-only config (no camera)
bypasses the wrapper, which always reads an image, and uses :class:`ACTStateBackbone`.

**Observations** (keys configurable): ``("observation", "image")`` uint8 ``[*B, H, W, 3]``
(-> float in ``[0, 1]``, then ``image_stats`` normalised: ImageNet's by default, what a
ResNet expects) and ``("observation", "state")`` ``[*B, D]`` (-> ``state_stats`` normalised
when given), fed to *every* state input the config declares (``observation.state`` and/or
``observation.environment_state``, each of size ``D``). ACT ignores language. LeRobot
0.4 keeps normalisation out of the model (in its processors), so a BC-trained checkpoint
expects normalised inputs and emits normalised actions: pass its dataset statistics as
``state_stats``/``image_stats`` and ``action_stats`` (the mean becomes
``chunk * std + mean``). A fresh, randomly initialised model needs none.

**Dropout** (ACT's default 0.1) is set to ``dropout=0.0`` by default: PPO recomputes
``log pi`` at loss time in train mode, and active dropout would make the ratio of the first
epoch differ from 1 by noise. The VAE encoder of a ``use_vae=True`` ACT is not run (no
action is fed, the latent is 0) and gets no gradient.

**Installing lerobot next to torch 2.13.** ``lerobot==0.4.4`` (the newest on PyPI) pins
``torch<2.11``, ``torchvision<0.26``, ``huggingface-hub<0.36``, and its
``lerobot.policies`` package imports every policy, whose GR00T config subclasses
``transformers.PretrainedConfig`` in a way ``transformers>=5`` rejects. ACT's modelling
code itself runs with torch 2.13 (tested on CPU), given a torchvision built for that torch.
So (the ``lerobot`` extra of ``pyproject.toml``)::

    pip install -e ".[lerobot]"            # the rest of what ACT imports; none of it touches torch
    pip install --no-deps lerobot==0.4.4 "datasets>=4,<5"
    # torchvision built for *this* torch (same version pair and same CPU/CUDA variant):
    pip install --no-deps torchvision==0.28.0                                  # the default torch 2.13.0 (CUDA)
    pip install --no-deps torchvision==0.28.0 --index-url <PyTorch's CPU wheel index>  # torch 2.13.0+cpu

:func:`import_act` imports ACT's two modules only, around ``lerobot/policies/__init__.py``
when that fails, and turns every failure into an ``ImportError`` that says what is missing.
The ACT runs outside ``torch.vmap`` only: build ``ChunkClipPPOLoss(..., deactivate_vmap=True)``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any, Literal

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictSequential
from tensordict.utils import NestedKey
from torch import nn
from torchrl.modules import ProbabilisticActor

from torchrl_chunk._deprecation import renamed_attribute, renamed_kwarg
from torchrl_chunk.keys import IMAGE_KEY, STATE_KEY
from torchrl_chunk.modules.heads import EMBEDDING_KEY
from torchrl_chunk.modules.vla import VLA_LOC_KEY, loc_actor_critic, make_vla_actor_critic

#: The LeRobot release this module is written and tested against.
LEROBOT_VERSION = "0.4.4"

#: LeRobot's batch keys (``lerobot.utils.constants``), spelled out so this module imports without lerobot.
OBS_STATE = "observation.state"
OBS_ENV_STATE = "observation.environment_state"
OBS_IMAGES = "observation.images"

#: ImageNet's per-channel mean and std (what ACT's torchvision ResNet was trained on).
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

INSTALL_HINT = (
    'pip install -e ".[lerobot]" && pip install --no-deps lerobot==0.4.4 "datasets>=4,<5" and the '
    "torchvision built for this torch (torch 2.13.0 -> torchvision 0.28.0, same CPU/CUDA variant: "
    "--index-url <PyTorch's CPU wheel index> for a +cpu torch); see torchrl_chunk/modules/lerobot_act.py"
)

Stats = tuple[Any, Any]


def import_act() -> tuple[type, type]:
    """``(ACTConfig, ACTPolicy)`` from lerobot, importing ACT's modelling code only.

    ``lerobot/policies/__init__.py`` imports every policy (GR00T, pi0, SmolVLA, ...); with
    ``transformers>=5`` it raises ``TypeError`` (GR00T's config dataclass). When that
    happens, ``lerobot.policies`` is registered as a bare package (its ``__init__`` not run)
    and only ``lerobot.policies.act.{configuration,modeling}_act`` are imported; ``from
    lerobot.policies import X`` does not work afterwards in this process.

    Raises:
        ImportError: lerobot, one of ACT's dependencies, or a torchvision that loads with
            this torch is missing; the message says which and how to install it.
    """
    if importlib.util.find_spec("lerobot") is None:
        raise ImportError(f"lerobot is not installed: {INSTALL_HINT}.")
    try:
        import torchvision  # noqa: F401  (ACT's modelling module imports it first thing)
    except Exception as err:  # a torchvision built for another torch: RuntimeError, not ImportError
        raise ImportError(
            f"torchvision cannot be imported with torch {torch.__version__} ({type(err).__name__}: {err}). "
            "ACT's modelling code imports it; install the torchvision build made for this torch "
            "(torch 2.13.0 -> torchvision 0.28.0, and the same CPU/CUDA variant: a +cpu torch needs "
            "the CPU torchvision from PyTorch's own wheel index: the default Linux wheels are CUDA builds)."
        ) from err
    try:
        return _act_classes()
    except ImportError as err:
        if not isinstance(err, ModuleNotFoundError) or _from_act(err):
            raise ImportError(f"{err}. ACT needs: {INSTALL_HINT}.") from err
        first: BaseException = err  # a dependency of another policy (lerobot/policies/__init__.py)
    except Exception as err:  # noqa: BLE001 -- e.g. TypeError from GR00T's config under transformers>=5
        first = err
    # Python dropped the modules whose import failed; the ones that finished (ACT's config
    # among them) stay and are reused.
    spec = importlib.util.find_spec("lerobot")
    stub = types.ModuleType("lerobot.policies")
    stub.__path__ = [os.path.join(path, "policies") for path in spec.submodule_search_locations]
    stub.__package__ = "lerobot.policies"
    sys.modules["lerobot.policies"] = stub
    try:
        return _act_classes()
    except Exception as err:
        del sys.modules["lerobot.policies"]
        raise ImportError(
            f"Cannot import lerobot's ACT (lerobot.policies failed with {type(first).__name__}: {first}; "
            f"ACT alone with {type(err).__name__}: {err}). ACT needs: {INSTALL_HINT}."
        ) from err


def _act_classes() -> tuple[type, type]:
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy

    return ACTConfig, ACTPolicy


def _from_act(err: ImportError) -> bool:
    """Whether a missing module is one of ACT's own imports (not another policy's)."""
    tb = err.__traceback__
    while tb is not None:
        if "/policies/act/" in tb.tb_frame.f_code.co_filename.replace("\\", "/"):
            return True
        tb = tb.tb_next
    return False


@renamed_kwarg("horizon", "chunk_size")
def act_config(
    *,
    state_dim: int,
    action_dim: int,
    chunk_size: int,
    image_size: int | tuple[int, int] | None = None,
    camera: str = "image",
    **overrides: Any,
):
    """A local ``ACTConfig`` for a randomly initialised ACT (nothing downloaded).

    Args:
        state_dim, action_dim: sizes of the env's state vector and of one action.
        chunk_size: our chunk size ``h``; ACT's ``chunk_size`` and ``n_action_steps``
            (``horizon=`` is its deprecated old name).
        image_size: ``None`` -- state only: the state is ACT's ``observation.environment_state``
            (ACT needs an image or an env state); ``H`` or ``(H, W)`` -- one RGB camera
            ``observation.images.<camera>`` and the state as ``observation.state``.
        camera: the camera's name (see ``image_size``).
        **overrides: any other ``ACTConfig`` field (``dim_model``, ``n_heads``,
            ``dim_feedforward``, ``n_encoder_layers``, ``vision_backbone``, ...).

    The defaults differ from ACT's for RL: ``pretrained_backbone_weights=None`` (random
    ResNet, no download), ``use_vae=False`` (the latent is 0 when acting anyway),
    ``dropout=0.0``, ``device="cpu"``.
    """
    ACTConfig, _ = import_act()
    from lerobot.configs.types import FeatureType, PolicyFeature

    if image_size is None:
        inputs = {OBS_ENV_STATE: PolicyFeature(type=FeatureType.ENV, shape=(state_dim,))}
    else:
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        inputs = {
            OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(state_dim,)),
            f"{OBS_IMAGES}.{camera}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, *hw)),
        }
    kwargs = {
        "input_features": inputs,
        "output_features": {"action": PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
        "chunk_size": chunk_size,
        "n_action_steps": chunk_size,
        "pretrained_backbone_weights": None,
        "use_vae": False,
        "dropout": 0.0,
        "device": "cpu",
    }
    kwargs.update(overrides)
    return ACTConfig(**kwargs)


def _stats(stats: Stats | None, size: int, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if stats is None:
        return None
    mean, std = (torch.as_tensor(t, dtype=torch.float32).reshape(-1) for t in stats)
    if mean.shape != std.shape or mean.numel() not in (1, size) or (std <= 0).any():
        raise ValueError(f"{name} must be (mean, std) of size 1 or {size}, equal-shaped, std > 0.")
    return mean.expand(size).clone(), std.expand(size).clone()


class ACTChunkModel(nn.Module):
    """A differentiable call of a LeRobot ``ACTPolicy``: LeRobot batch dict -> chunk ``[B, h, A]``.

    ``forward(batch)`` reads ``"observation.state"`` ``[B, D]`` (fed to every state input of
    the config) and the config's camera (``"observation.images.<camera>"`` ``[B, 3, H, W]``,
    uint8 or float), runs ``policy.model`` with latent 0 and returns the first ``chunk_size``
    actions of ACT's chunk (``action_stats`` un-normalised). On the way it calls
    ``self.features`` (an ``nn.Identity``) once on ACT's encoder output mean-pooled over
    tokens, ``[B, dim_model]``: the critic's input, caught by a hook
    (:class:`~torchrl_chunk.modules.vla.VLAChunkBackbone`) or returned with
    ``return_features=True``.

    Args:
        policy: a ``lerobot.policies.act.modeling_act.ACTPolicy`` (single observation step,
            at most one camera).
        chunk_size: ``h <= policy.config.chunk_size`` (``horizon=`` is its deprecated old
            name, ``.horizon`` of the attribute).

    Keyword Args:
        state_stats, image_stats, action_stats: see the module docstring (``image_stats``
            ``"imagenet"`` -> :data:`IMAGENET_STATS`).
    """

    horizon = renamed_attribute("horizon", "chunk_size")

    @renamed_kwarg("horizon", "chunk_size")
    def __init__(
        self,
        policy: nn.Module,
        chunk_size: int,
        *,
        state_stats: Stats | None = None,
        image_stats: Stats | Literal["imagenet"] | None = "imagenet",
        action_stats: Stats | None = None,
    ) -> None:
        super().__init__()
        config = policy.config
        self.policy = policy
        self.features = nn.Identity()
        act_chunk = int(config.chunk_size)
        self.action_dim = int(config.action_feature.shape[0])
        if not 1 <= chunk_size <= act_chunk:
            raise ValueError(
                f"ACT predicts chunks of {act_chunk} actions; chunk_size must be 1..{act_chunk}, got {chunk_size}."
            )
        self.chunk_size = chunk_size
        cameras = list(config.image_features)
        if len(cameras) > 1:
            raise ValueError(f"ACTChunkModel feeds one camera, the config has {len(cameras)}: {cameras}.")
        self.image_key: str | None = cameras[0] if cameras else None
        state_keys = []
        if config.robot_state_feature is not None:
            state_keys.append((OBS_STATE, int(config.robot_state_feature.shape[0])))
        if config.env_state_feature is not None:
            state_keys.append((OBS_ENV_STATE, int(config.env_state_feature.shape[0])))
        sizes = {size for _, size in state_keys}
        if len(sizes) > 1:
            raise ValueError(
                f"The config's state inputs have different sizes {dict(state_keys)}; one state vector feeds them all."
            )
        self.state_keys = [key for key, _ in state_keys]
        self.state_dim: int | None = sizes.pop() if sizes else None
        if self.image_key is None and OBS_ENV_STATE not in self.state_keys:
            raise ValueError("ACT needs a camera or an observation.environment_state input.")
        self.dim_model = int(config.dim_model)
        for name, stats, size in (
            ("state", state_stats, self.state_dim or 1),
            ("action", action_stats, self.action_dim),
        ):
            pair = _stats(stats, size, f"{name}_stats")
            self.register_buffer(f"{name}_mean", None if pair is None else pair[0])
            self.register_buffer(f"{name}_std", None if pair is None else pair[1])
        pair = _stats(IMAGENET_STATS if image_stats == "imagenet" else image_stats, 3, "image_stats")
        self.register_buffer("image_mean", None if pair is None else pair[0].view(3, 1, 1))
        self.register_buffer("image_std", None if pair is None else pair[1].view(3, 1, 1))

    @property
    def uses_state(self) -> bool:
        return bool(self.state_keys)

    def _image(self, batch: dict) -> torch.Tensor:
        image = batch.get(self.image_key)
        if image is None:
            found = [k for k in batch if isinstance(k, str) and k.startswith(OBS_IMAGES + ".")]
            if len(found) != 1:
                raise KeyError(f"ACT reads the camera {self.image_key!r}; the batch has {sorted(map(str, batch))}.")
            image = batch[found[0]]
        if not image.is_floating_point():
            image = image.float() / 255.0
        if self.image_mean is not None:
            image = (image - self.image_mean) / self.image_std
        return image

    def forward(self, batch: dict, *, return_features: bool = False):
        act_batch: dict[str, Any] = {}
        if self.uses_state:
            state = batch[OBS_STATE]
            if state.shape[-1] != self.state_dim:
                raise ValueError(f"ACT was configured for states of size {self.state_dim}, got {state.shape[-1]}.")
            state = state.float()
            if self.state_mean is not None:
                state = (state - self.state_mean) / self.state_std
            for key in self.state_keys:
                act_batch[key] = state
        if self.image_key is not None:
            act_batch[OBS_IMAGES] = [self._image(batch)]
            ref = act_batch[OBS_IMAGES][0]
        else:
            ref = act_batch[OBS_ENV_STATE]
        # ACT (0.4.4) reads batch["observation.state"].device for its zero latent, even
        # when the config has no robot state: give it an empty one then.
        act_batch.setdefault(OBS_STATE, ref.new_zeros(ref.shape[0], 0))
        caught: list[torch.Tensor] = []
        hook = self.policy.model.encoder.register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            chunk = self.policy.model(act_batch)[0]  # no "action" in the batch: latent 0, no VAE
        finally:
            hook.remove()
        chunk = chunk[:, : self.chunk_size].float()
        if self.action_mean is not None:
            chunk = chunk * self.action_std + self.action_mean
        features = self.features(caught[-1].mean(0))  # [tokens, B, D] -> [B, D]
        return (chunk, features) if return_features else chunk


class ACTStateBackbone(nn.Module):
    """State-only ACT: ``state [*B, D] -> (chunk [*B, h, A], features [*B, dim_model])``."""

    def __init__(self, model: ACTChunkModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = state.shape[:-1]
        chunk, features = self.model({OBS_STATE: state.reshape(-1, state.shape[-1])}, return_features=True)
        return chunk.reshape(*batch, *chunk.shape[-2:]), features.reshape(*batch, -1)


def _set_dropout(module: nn.Module, p: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
        elif isinstance(m, nn.MultiheadAttention):
            m.dropout = p


@renamed_kwarg("horizon", "chunk_size")
def make_act_actor_critic(
    config_or_policy: Any,
    *,
    chunk_size: int,
    action_dim: int,
    log_std_init: float = -1.0,
    dropout: float | None = 0.0,
    state_stats: Stats | None = None,
    image_stats: Stats | Literal["imagenet"] | None = "imagenet",
    action_stats: Stats | None = None,
    example: TensorDictBase | None = None,
    image_key: NestedKey = IMAGE_KEY,
    state_key: NestedKey = STATE_KEY,
    image_layout: Literal["HWC", "CHW"] = "HWC",
) -> tuple[ProbabilisticActor, TensorDictSequential]:
    """A chunk actor and a critic sharing one LeRobot ACT (see the module docstring).

    Args:
        config_or_policy: an ``ACTConfig`` (a fresh ``ACTPolicy`` is built from it, random
            init; see :func:`act_config`) or an ``ACTPolicy`` (e.g. a BC checkpoint loaded
            with ``ACTPolicy.from_pretrained`` on a LeRobot stack); ``n_obs_steps=1``, at
            most one camera.

    Keyword Args:
        chunk_size: the chunk size ``h`` of the env and the losses; ``<=`` ACT's
            ``config.chunk_size`` (the first ``h`` of ACT's actions are the mean).
            ``horizon=`` is its deprecated old name.
        action_dim: must equal the config's action size.
        log_std_init: initial ``log sigma`` of the chunk Gaussian.
        dropout: set on every dropout of the ACT (``None`` leaves them).
        state_stats, image_stats, action_stats: see :class:`ACTChunkModel`.
        example: an observation batch, run once (no gradient) to check the shapes.
        image_key, state_key: the batch's observation keys.
        image_layout: ``"HWC"`` (the env's ``[*B, H, W, 3]``) or ``"CHW"``.

    Returns:
        ``(actor, critic)`` as :func:`~torchrl_chunk.modules.make_vla_actor_critic`
        returns them: the actor samples ``"action"`` ``[*B, h, A]`` and writes
        ``"action_log_prob"`` ``[*B]`` (and ``"loc"``, ``"scale"``, ``"embedding"``); the
        critic writes ``"state_value"`` ``[*B, 1]``; both hold the same ACT backbone
        module. :func:`act_policy` returns the ``ACTPolicy`` (to save it, e.g.).
    """
    ACTConfig, ACTPolicy = import_act()
    if isinstance(config_or_policy, ACTConfig):
        policy = ACTPolicy(config_or_policy)
    elif isinstance(config_or_policy, ACTPolicy):
        policy = config_or_policy
    else:
        raise TypeError(f"Expected an ACTConfig or an ACTPolicy, got {type(config_or_policy).__name__}.")
    config = policy.config
    if int(config.action_feature.shape[0]) != action_dim:
        raise ValueError(
            f"The ACT emits actions of size {config.action_feature.shape[0]}, the policy is asked for "
            f"action_dim={action_dim}."
        )
    if int(config.n_obs_steps) != 1:
        raise ValueError(f"ACT with n_obs_steps={config.n_obs_steps} is not supported (one observation step).")
    if dropout is not None:
        _set_dropout(policy, float(dropout))
    model = ACTChunkModel(
        policy, chunk_size, state_stats=state_stats, image_stats=image_stats, action_stats=action_stats
    )
    if model.image_key is not None:
        from torchrl.modules.vla import LeRobotPolicyWrapper

        camera = model.image_key.removeprefix(OBS_IMAGES + ".")
        vla = LeRobotPolicyWrapper(
            model, action_dim=action_dim, chunk_size=chunk_size, camera_name=camera, use_state=model.uses_state,
            image_key=image_key, state_key=state_key,
        )
        return make_vla_actor_critic(
            vla, chunk_size=chunk_size, action_dim=action_dim, instructions="", feature_module="policy.features",
            embed_dim=model.dim_model, log_std_init=log_std_init, example=example, image_key=image_key,
            state_key=state_key, image_layout=image_layout,
        )
    backbone = TensorDictModule(ACTStateBackbone(model), in_keys=[state_key], out_keys=[VLA_LOC_KEY, EMBEDDING_KEY])
    if example is not None:
        with torch.no_grad():
            backbone(example.select(state_key, strict=True).clone(False))
    actor, critic = loc_actor_critic(backbone, chunk_size=chunk_size, action_dim=action_dim, embed_dim=model.dim_model,
                                     log_std_init=log_std_init)
    return actor, critic


def act_policy(actor: nn.Module) -> nn.Module:
    """The LeRobot ``ACTPolicy`` inside an actor made by :func:`make_act_actor_critic`."""
    models = [m for m in actor.modules() if isinstance(m, ACTChunkModel)]
    if len(models) != 1:
        raise ValueError(f"Expected one ACTChunkModel in the actor, found {len(models)}.")
    return models[0].policy


__all__ = [
    "IMAGENET_STATS",
    "LEROBOT_VERSION",
    "ACTChunkModel",
    "ACTStateBackbone",
    "act_config",
    "act_policy",
    "import_act",
    "make_act_actor_critic",
]
