"""Image tokenizers: ``ImageTokenizer`` with the ``SmallStem16`` encoder (spec 1.3).

Per camera and timestep the observation image (3 channels) is stacked with the goal image
of the same camera (3 channels, uint8 zeros when there is no goal), scaled to [-1, 1] with
``x / 127.5 - 1`` (so an absent goal is a constant -1 plane), and passed through four
weight-standardised 3x3 stride-2 convolutions with GroupNorm(32) and ReLU and a final
``embedding`` convolution. The ``(H', W', C)`` map is flattened row-major into tokens, as
the NHWC Flax model does.

Flax names: ``observation_tokenizers_{camera}.SmallStem16_0.{StdConv_i, GroupNorm_i,
embedding}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchrl_chunk.modules.octo.config import ImageTokenizerConfig


class StdConv(nn.Conv2d):
    """Conv2d with weight standardisation applied at every forward pass.

    Each output channel's kernel is standardised over ``(in, kh, kw)``:
    ``(w - mean) / (population_std + eps)`` (epsilon on the std, not the variance, as
    in Octo). The stored weight stays raw; gradients flow through the standardisation.
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        std = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True).sqrt()
        return (w - mean) / (std + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)


class SmallStem(nn.Module):
    """``SmallStem16``: the conv stem that turns a 6-channel image into patch tokens.

    Input ``[N, 6, H, W]`` float in [-1, 1] (NCHW); output ``[N, (H/p)*(W/p), C]``.
    """

    def __init__(
        self,
        in_channels: int = 6,
        features: tuple[int, ...] = (32, 96, 192, 384),
        num_features: int = 512,
        patch_size: int = 16,
        num_groups: int = 32,
        group_norm_eps: float = 1e-6,
        std_conv_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_stages = len(features)
        prev = in_channels
        for i, feat in enumerate(features):
            self.add_module(
                f"StdConv_{i}",
                StdConv(prev, feat, kernel_size=3, stride=2, padding=1, eps=std_conv_eps),
            )
            self.add_module(f"GroupNorm_{i}", nn.GroupNorm(num_groups, feat, eps=group_norm_eps))
            prev = feat
        k = patch_size // 2**self.num_stages
        self.embedding = nn.Conv2d(prev, num_features, kernel_size=k, stride=k, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.num_stages):
            x = getattr(self, f"StdConv_{i}")(x)
            x = F.relu(getattr(self, f"GroupNorm_{i}")(x))
        x = self.embedding(x)
        # NCHW -> N, H*W, C: the row-major token order of the NHWC Flax model.
        return x.flatten(2).transpose(1, 2)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8-range pixels -> [-1, 1] (``x / 127.5 - 1``; Octo's "default" norm)."""
    return images.to(torch.float32) / 127.5 - 1.0


class ImageTokenizer(nn.Module):
    """One camera: obs + goal image -> patch tokens ``[N, num_tokens, num_features]``.

    Args:
        config: the camera's :class:`ImageTokenizerConfig`.
        group_norm_eps, std_conv_eps: Flax epsilons.
    """

    def __init__(
        self, config: ImageTokenizerConfig, group_norm_eps: float = 1e-6, std_conv_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.config = config
        self.SmallStem16_0 = SmallStem(
            in_channels=6,
            features=config.features,
            num_features=config.num_features,
            patch_size=config.patch_size,
            num_groups=config.num_groups,
            group_norm_eps=group_norm_eps,
            std_conv_eps=std_conv_eps,
        )

    def forward(self, image: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        """Tokenise ``N`` images.

        Args:
            image: ``[N, 3, H, W]`` pixels in the uint8 range (uint8 or float, 0..255),
                ``H = W = config.image_size``.
            goal: goal images of the same shape, or ``None`` (no goal: zeros, i.e. -1
                after normalisation, exactly as Octo feeds a missing goal).
        """
        size = self.config.image_size
        if image.shape[-3:] != (3, size, size):
            raise ValueError(
                f"image tokenizer {self.config.name!r} expects [N, 3, {size}, {size}] images, "
                f"got {tuple(image.shape)}; resize first (OctoBackbone does this)."
            )
        obs = normalize_images(image)
        if goal is None:
            goal_n = torch.full_like(obs, -1.0)
        else:
            goal_n = normalize_images(goal).expand_as(obs)
        return self.SmallStem16_0(torch.cat([obs, goal_n], dim=1))
