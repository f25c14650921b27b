"""Octo-small in PyTorch: a port of the JAX/Flax Octo backbone (octo-small-1.5).

Layout follows Octo's own module boundaries:

* :mod:`.config` -- :class:`OctoConfig` (octo-small-1.5 defaults, ``tiny()`` for tests);
* :mod:`.tokenizers` -- ``ImageTokenizer`` / ``SmallStem16`` (weight-standardised convs);
* :mod:`.language` -- the frozen T5 encoder and per-task instruction tables;
* :mod:`.attention_mask` -- the block-wise causal mask (1.5 and legacy 1.0 lookup);
* :mod:`.transformer` -- the pre-norm ViT encoder;
* :mod:`.model` -- :class:`OctoTransformer` (tokens, position embeddings, readouts);
* :mod:`.policy` -- the TorchRL backbone and :func:`make_octo_actor_critic`;
* :mod:`.serialization` -- the Flax msgpack encoding (msgpack + numpy only);
* :mod:`.flax_layout` -- the one Flax <-> torch correspondence table (both directions);
* :mod:`.config_json` -- an official ``config.json`` -> :class:`OctoConfig`;
* :mod:`.checkpoint` -- reading official checkpoint directories;
* :mod:`.torch_checkpoint` -- our own one-file ``torch.save`` format;
* :mod:`.errors` -- the one-line checkpoint errors;
* :mod:`.convert` -- the command line (checkpoint -> torch file, instructions -> T5 table).

See ``docs/octo.md`` for downloading and converting the official weights.
"""

from torchrl_chunk.modules.octo.attention_mask import (
    AttentionRule,
    TokenGroup,
    block_attention_mask,
    octo_token_groups,
)
from torchrl_chunk.modules.octo.checkpoint import LoadReport, OctoCheckpoint, load_octo_checkpoint
from torchrl_chunk.modules.octo.config import ImageTokenizerConfig, OctoConfig
from torchrl_chunk.modules.octo.config_json import config_from_octo_json
from torchrl_chunk.modules.octo.errors import (
    OctoCheckpointError,
    OctoShapeMismatchError,
    OctoVersionMismatchError,
)
from torchrl_chunk.modules.octo.flax_layout import export_flax_params
from torchrl_chunk.modules.octo.language import (
    InstructionEmbeddings,
    T5LanguageEncoder,
    t5_encoder_from_state_dict,
)
from torchrl_chunk.modules.octo.model import OctoTransformer, count_parameters
from torchrl_chunk.modules.octo.policy import (
    OctoBackbone,
    find_octo_backbones,
    make_octo_actor_critic,
    make_octo_backbone,
)
from torchrl_chunk.modules.octo.torch_checkpoint import load_torch_checkpoint, save_torch_checkpoint

__all__ = [
    "AttentionRule",
    "ImageTokenizerConfig",
    "InstructionEmbeddings",
    "LoadReport",
    "OctoBackbone",
    "OctoCheckpoint",
    "OctoCheckpointError",
    "OctoConfig",
    "OctoShapeMismatchError",
    "OctoTransformer",
    "OctoVersionMismatchError",
    "T5LanguageEncoder",
    "TokenGroup",
    "block_attention_mask",
    "config_from_octo_json",
    "count_parameters",
    "export_flax_params",
    "find_octo_backbones",
    "load_octo_checkpoint",
    "load_torch_checkpoint",
    "make_octo_actor_critic",
    "make_octo_backbone",
    "octo_token_groups",
    "save_torch_checkpoint",
    "t5_encoder_from_state_dict",
]
