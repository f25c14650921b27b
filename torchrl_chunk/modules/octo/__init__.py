"""Octo-small in PyTorch: a port of the JAX/Flax Octo backbone (octo-small-1.5).

Layout follows Octo's own module boundaries:

* :mod:`.config` -- :class:`OctoConfig` (octo-small-1.5 defaults, ``tiny()`` for tests);
* :mod:`.tokenizers` -- ``ImageTokenizer`` / ``SmallStem16`` (weight-standardised convs);
* :mod:`.language` -- the frozen T5 encoder and per-task instruction tables;
* :mod:`.attention_mask` -- the block-wise causal mask (1.5 and legacy 1.0 lookup);
* :mod:`.transformer` -- the pre-norm ViT encoder;
* :mod:`.model` -- :class:`OctoTransformer` (tokens, position embeddings, readouts);
* :mod:`.policy` -- the TorchRL backbone and :func:`make_octo_actor_critic`;
* :mod:`.serialization`, :mod:`.checkpoint` -- official checkpoint reading/writing
  (msgpack + numpy only) and our torch checkpoints.

See ``docs/octo.md`` for downloading and converting the official weights.
"""

from torchrl_chunk.modules.octo.attention_mask import (
    AttentionRule,
    TokenGroup,
    block_attention_mask,
    octo_token_groups,
)
from torchrl_chunk.modules.octo.checkpoint import (
    LoadReport,
    OctoCheckpoint,
    OctoCheckpointError,
    OctoShapeMismatchError,
    OctoVersionMismatchError,
    config_from_octo_json,
    count_parameters,
    export_flax_params,
    load_octo_checkpoint,
    load_torch_checkpoint,
    octo_config_json,
    save_torch_checkpoint,
    write_octo_checkpoint,
)
from torchrl_chunk.modules.octo.config import ImageTokenizerConfig, OctoConfig
from torchrl_chunk.modules.octo.language import (
    InstructionEmbeddings,
    T5LanguageEncoder,
    t5_encoder_from_state_dict,
)
from torchrl_chunk.modules.octo.model import OctoTransformer
from torchrl_chunk.modules.octo.policy import (
    OctoBackbone,
    find_octo_backbones,
    make_octo_actor_critic,
    make_octo_backbone,
)

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
    "octo_config_json",
    "octo_token_groups",
    "save_torch_checkpoint",
    "t5_encoder_from_state_dict",
    "write_octo_checkpoint",
]
