"""Configuration of the Octo backbone (``OctoConfig``).

The defaults are the values of the released ``octo-small-1.5`` model (spec section 1.1):
ViT-S width 384, 12 layers, 6 heads, MLP 1536, a 10-step time axis in every per-timestep
position embedding, two SmallStem16 image tokenizers (primary 256 px, wrist 128 px), 16
frozen T5-base language tokens of width 768 and one ``readout_action`` token per timestep.

Two versions of the model exist and differ only in how tokens attend to each other
(spec 1.11): ``"1.5"`` repeats the language tokens in every timestep block and uses the
correct (right-sided) token-to-group lookup; ``"1.0"`` does neither. Both share the same
parameter tree.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, Literal

OctoVersion = Literal["1.0", "1.5"]

#: Width of the T5 encoder output by encoder name (``task_tokenizers.language``).
T5_WIDTHS = {"t5-small": 512, "t5-base": 768, "t5-large": 1024}


def _check_field_types(config: Any) -> None:
    """Refuse a field of the wrong scalar type (e.g. ``num_layers="12"`` from a bad file)."""
    kinds = {"int": (numbers.Integral,), "float": (numbers.Real,), "bool": (bool,), "str": (str,)}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        ok = kinds.get(f.type)
        if ok and (not isinstance(value, ok) or (f.type != "bool" and isinstance(value, bool))):
            raise TypeError(
                f"{type(config).__name__}.{f.name} must be {f.type}, got "
                f"{type(value).__name__} {value!r}."
            )


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """One ``ImageTokenizer`` with a ``SmallStem`` encoder (spec 1.3).

    Args:
        name: camera name; the Flax modules are ``observation_tokenizers_{name}`` and
            ``obs_{name}_projection`` / ``obs_{name}_pos_embedding``.
        image_size: side of the square input image in pixels (256 primary, 128 wrist).
        features: output channels of the weight-standardised 3x3 stride-2 convs.
        num_features: width of the final ``embedding`` conv (the token width).
        patch_size: pixels per token side; the final conv has kernel/stride
            ``patch_size // 2**len(features)``.
        num_groups: GroupNorm groups (32 in Octo; every entry of ``features`` must be a
            multiple of it).
    """

    name: str
    image_size: int
    features: tuple[int, ...] = (32, 96, 192, 384)
    num_features: int = 512
    patch_size: int = 16
    num_groups: int = 32

    def __post_init__(self) -> None:
        _check_field_types(self)
        down = 2 ** len(self.features)
        if self.patch_size % down:
            raise ValueError(
                f"image tokenizer {self.name!r}: patch_size={self.patch_size} must be a "
                f"multiple of 2**len(features)={down}."
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image tokenizer {self.name!r}: image_size={self.image_size} must be a "
                f"multiple of patch_size={self.patch_size}."
            )
        bad = [f for f in self.features if f % self.num_groups]
        if bad:
            raise ValueError(
                f"image tokenizer {self.name!r}: features {bad} are not multiples of "
                f"num_groups={self.num_groups} (GroupNorm needs whole groups)."
            )

    @property
    def num_tokens(self) -> int:
        """Tokens per image: ``(image_size / patch_size) ** 2`` (256 for 256 px)."""
        return (self.image_size // self.patch_size) ** 2


def _default_image_tokenizers() -> tuple[ImageTokenizerConfig, ...]:
    return (
        ImageTokenizerConfig("primary", 256),
        ImageTokenizerConfig("wrist", 128),
    )


@dataclass(frozen=True)
class OctoConfig:
    """Sizes and switches of the Octo backbone; defaults are ``octo-small-1.5``.

    Args:
        embed_dim: token width (``token_embedding_size``).
        num_layers, num_heads, mlp_dim: transformer size.
        max_horizon: length of the time axis of every per-timestep position embedding.
        window_size: history length ``W`` the backbone is run with (1 or 2; at most
            ``max_horizon``). Tokens of window position ``t`` use time-position index
            ``time_position_offset + t``.
        time_position_offset: first time-position index used. ``0`` is the official rule
            (slice ``[:W]``: with ``W = 2`` the current frame uses index 1, with ``W = 1``
            index 0). With ``W = 1`` set it to ``1`` to give the current frame the
            embedding it had in pretraining (the previous-frame slot is then unused).
        image_tokenizers: the cameras, in sequence order.
        language_dim: width of the frozen language encoder output (768 for T5-base).
        language_tokens: number of language tokens (the tokenizer's ``max_length``, 16).
        language_encoder: name of the HF language encoder (informational, "t5-base").
        num_readout_tokens: tokens of the ``readout_action`` group per timestep.
        repeat_task_tokens: 1.5 only: copy the language tokens into every timestep block.
        use_correct_attention: 1.5 only: right-sided token-to-group lookup for the mask.
        layer_norm_eps, group_norm_eps, std_conv_eps: the Flax epsilons (spec 4.4).
        action_horizon, action_dim: sizes of the pretrained diffusion head (informational;
            the RL heads get their own sizes).
    """

    embed_dim: int = 384
    num_layers: int = 12
    num_heads: int = 6
    mlp_dim: int = 1536
    max_horizon: int = 10
    window_size: int = 2
    time_position_offset: int = 0
    image_tokenizers: tuple[ImageTokenizerConfig, ...] = field(
        default_factory=_default_image_tokenizers
    )
    language_dim: int = 768
    language_tokens: int = 16
    language_encoder: str = "t5-base"
    num_readout_tokens: int = 1
    repeat_task_tokens: bool = True
    use_correct_attention: bool = True
    layer_norm_eps: float = 1e-6
    group_norm_eps: float = 1e-6
    std_conv_eps: float = 1e-5
    action_horizon: int = 4
    action_dim: int = 7

    def __post_init__(self) -> None:
        _check_field_types(self)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}."
            )
        if not 1 <= self.window_size:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}.")
        if self.time_position_offset < 0 or (
            self.time_position_offset + self.window_size > self.max_horizon
        ):
            raise ValueError(
                f"time positions {self.time_position_offset}.."
                f"{self.time_position_offset + self.window_size - 1} do not fit the "
                f"max_horizon={self.max_horizon} position embeddings; lower window_size or "
                f"time_position_offset."
            )
        names = [t.name for t in self.image_tokenizers]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"image tokenizer names must be unique and non-empty: {names}.")
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "image_tokenizers", tuple(self.image_tokenizers))

    # ------------------------------------------------------------------ presets
    @classmethod
    def octo_small_1_5(cls, **overrides: Any) -> OctoConfig:
        """The released ``octo-small-1.5`` (same as ``OctoConfig()``)."""
        return cls(**overrides)

    @classmethod
    def octo_small_1_0(cls, **overrides: Any) -> OctoConfig:
        """The December 2023 ``octo-small``: same tree, legacy attention, no repeated language."""
        overrides = {"repeat_task_tokens": False, "use_correct_attention": False, **overrides}
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> OctoConfig:
        """A few-hundred-thousand-parameter config with the full structure, for tests.

        2 layers of width 32, 2 heads, 32 px primary and 16 px wrist images (4 and 1
        tokens), narrow stems. Language width stays 768 so real T5 embeddings still fit.
        """
        stem = {"features": (32, 32, 32, 32), "num_features": 32}
        defaults: dict[str, Any] = {
            "embed_dim": 32,
            "num_layers": 2,
            "num_heads": 2,
            "mlp_dim": 64,
            "image_tokenizers": (
                ImageTokenizerConfig("primary", 32, **stem),
                ImageTokenizerConfig("wrist", 16, **stem),
            ),
        }
        defaults.update(overrides)
        return cls(**defaults)

    # ------------------------------------------------------------------ helpers
    @property
    def version(self) -> OctoVersion | str:
        """``"1.5"``, ``"1.0"``, or ``"custom"`` for a mix of the two switches."""
        if self.repeat_task_tokens and self.use_correct_attention:
            return "1.5"
        if not self.repeat_task_tokens and not self.use_correct_attention:
            return "1.0"
        return "custom"

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def image_tokenizer(self, name: str) -> ImageTokenizerConfig:
        for tok in self.image_tokenizers:
            if tok.name == name:
                return tok
        raise KeyError(
            f"no image tokenizer named {name!r}; this config has "
            f"{[t.name for t in self.image_tokenizers]}."
        )

    def replace(self, **changes: Any) -> OctoConfig:
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (used in our torch checkpoints)."""
        out = dataclasses.asdict(self)
        out["image_tokenizers"] = [dataclasses.asdict(t) for t in self.image_tokenizers]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OctoConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["image_tokenizers"] = tuple(
            ImageTokenizerConfig(**{**t, "features": tuple(t["features"])})
            for t in data.get("image_tokenizers", [])
        )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown OctoConfig fields {sorted(unknown)}; known: {sorted(known)}.")
        return cls(**data)
