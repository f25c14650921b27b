"""Official-format checkpoints: synthetic trees with the spec's names and shapes.

The trees come from ``conftest.spec_policy_shapes`` (spec 2.4 restated by hand), and the
full-size ``config.json`` below is written from spec 1.1, so these tests check the loader
against the specification rather than against the package's own naming.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from modules.octo.octo_writer import write_octo_checkpoint
from torchrl_chunk.modules.octo import (
    OctoCheckpointError,
    OctoConfig,
    OctoShapeMismatchError,
    OctoTransformer,
    OctoVersionMismatchError,
    count_parameters,
    export_flax_params,
    load_octo_checkpoint,
    load_torch_checkpoint,
    save_torch_checkpoint,
)
from torchrl_chunk.modules.octo.serialization import (
    flatten_tree,
    msgpack_restore,
    msgpack_serialize,
    unflatten_tree,
    write_msgpack_file,
)

SPEC_POLICY_LEAVES = 267
SPEC_POLICY_PARAMS = 27_042_060
SPEC_DIFFUSION_LEAVES = 27
SPEC_DIFFUSION_PARAMS = 1_703_564
SPEC_BACKBONE_PARAMS = 25_338_496  # spec 5.1: "25,338,496 without any head"


def spec(name, stack, kwargs=None):
    return {"module": stack, "name": name, "args": [], "kwargs": kwargs or {}}


def official_config_json(version: str = "1.5") -> dict:
    """config.json of octo-small-{1.5,1.0} as spec 1.1 / 1.11 describe it."""
    tok = "octo.model.components.tokenizers"
    stem = spec("SmallStem16", "octo.model.components.vit_encoders")
    model = {
        "observation_tokenizers": {
            cam: spec(
                "ImageTokenizer",
                tok,
                {"obs_stack_keys": [f"image_{cam}"], "task_stack_keys": [f"image_{cam}"], "encoder": stem},
            )
            for cam in ("primary", "wrist")
        },
        "task_tokenizers": {
            "language": spec("LanguageTokenizer", tok, {"encoder": "t5-base", "finetune_encoder": False})
        },
        "heads": {
            "action": spec(
                "DiffusionActionHead",
                "octo.model.components.action_heads",
                {"readout_key": "readout_action", "use_map": False, "action_dim": 7,
                 "n_diffusion_samples": 1,
                 **({"action_horizon": 4, "dropout_rate": 0.0} if version == "1.5"
                    else {"pred_horizon": 4, "dropout_rate": 0.1})},
            )
        },
        "readouts": {"action": 1},
        "token_embedding_size": 384,
        "transformer_kwargs": {
            "mlp_dim": 1536, "num_layers": 12, "num_attention_heads": 6, "dropout_rate": 0.0,
            "attention_dropout_rate": 0.0, "add_position_embedding": False,
        },
        "max_horizon": 10,
    }
    if version == "1.5":
        model["repeat_task_tokens"] = True
        model["use_correct_attention"] = True
    return {
        "model": model,
        "window_size": 2,
        "text_processor": spec(
            "HFTokenizer", "octo.components.text_processing",
            {"tokenizer_name": "t5-base", "encode_with_model": False,
             "tokenizer_kwargs": {"max_length": 16, "padding": "max_length", "truncation": True}},
        ),
        "optimizer": {"frozen_keys": ["*hf_model*"]},
    }


def write_official(root: Path, flat: dict, raw_config: dict, step: int = 300000) -> Path:
    """Write files the way the official repository lays them out (spec 2.1)."""
    (root / str(step) / "default").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(raw_config))
    (root / "dataset_statistics.json").write_text(
        json.dumps({"bridge_dataset": {"action": {"mean": [0.0] * 7, "std": [1.0] * 7,
                                                  "mask": [True] * 6 + [False]}}})
    )
    write_msgpack_file(root / str(step) / "default" / "checkpoint", unflatten_tree(flat))
    return root




def test_spec_tree_counts(spec):
    shapes = spec.policy_shapes()
    assert len(shapes) == SPEC_POLICY_LEAVES
    assert sum(int(np.prod(s)) for s in shapes.values()) == SPEC_POLICY_PARAMS
    diff = {k: s for k, s in shapes.items() if k.startswith("heads_action/")}
    assert len(diff) == SPEC_DIFFUSION_LEAVES
    assert sum(int(np.prod(s)) for s in diff.values()) == SPEC_DIFFUSION_PARAMS
    t5 = spec.t5_shapes()
    assert len(t5) == 99 and sum(int(np.prod(s)) for s in t5.values()) == 109_628_544


def test_full_size_official_checkpoint_loads_with_zero_missing_and_unexpected(spec, tmp_path):
    t0 = time.perf_counter()
    flat = spec.random_tree(spec.policy_shapes(), seed=0)
    write_official(tmp_path / "octo-small-1.5", flat, official_config_json("1.5"))
    t_write = time.perf_counter() - t0

    t0 = time.perf_counter()
    ckpt = load_octo_checkpoint(tmp_path / "octo-small-1.5")
    t_load = time.perf_counter() - t0
    rep = ckpt.report
    print(f"\nfull-size synthetic: write {t_write:.2f}s, load {t_load:.2f}s\n{rep}")

    assert rep.missing == [] and rep.unexpected == []
    assert len(rep.loaded) + len(rep.skipped) == SPEC_POLICY_LEAVES
    assert len(rep.skipped) == SPEC_DIFFUSION_LEAVES
    assert all(k.startswith("heads_action/diffusion_model/") for k in rep.skipped)
    assert rep.checkpoint_policy_params == SPEC_POLICY_PARAMS
    assert rep.loaded_params == SPEC_BACKBONE_PARAMS == count_parameters(ckpt.transformer)
    assert ckpt.step == 300000 and ckpt.config == OctoConfig() and ckpt.config.version == "1.5"
    assert "bridge_dataset" in ckpt.dataset_statistics

    m = ckpt.transformer
    p = "octo_transformer/observation_tokenizers_primary/SmallStem16_0/StdConv_0/kernel"
    conv = m.observation_tokenizers_primary.SmallStem16_0.StdConv_0.weight
    assert torch.equal(conv, torch.from_numpy(flat[p]).permute(3, 2, 0, 1))  # HWIO -> OIHW
    blk = "octo_transformer/BlockTransformer_0/Transformer_0/encoderblock_3"
    attn = m.BlockTransformer_0.Transformer_0.encoderblock_3.MultiHeadDotProductAttention_0
    q = flat[f"{blk}/MultiHeadDotProductAttention_0/query/kernel"]  # (384, 6, 64)
    # output feature h*64+d of the torch Linear is Flax (head h, dim d)
    assert torch.equal(attn.query.weight[2 * 64 + 5], torch.from_numpy(q[:, 2, 5]))
    o = flat[f"{blk}/MultiHeadDotProductAttention_0/out/kernel"]  # (6, 64, 384)
    assert torch.equal(attn.out.weight[:, 4 * 64 + 7], torch.from_numpy(o[4, 7]))
    dense = flat[f"{blk}/MlpBlock_0/Dense_0/kernel"]
    assert torch.equal(m.BlockTransformer_0.Transformer_0.encoderblock_3.MlpBlock_0.Dense_0.weight,
                       torch.from_numpy(dense).T)

    # Bit-exact export back to the Flax layout.
    back = export_flax_params(m)
    assert set(back) == {k for k in flat if not k.startswith("heads_action/")}
    for k, v in back.items():
        assert v.shape == flat[k].shape and np.array_equal(v, flat[k]), k

    # The loaded model runs (primary camera, W = 2) and gives finite readouts.
    out = m({"primary": torch.zeros(1, 2, 3, 256, 256)}, torch.randn(1, 16, 768))
    assert torch.isfinite(out["readout_action"]).all()
    assert t_write + t_load < 20


def test_tiny_checkpoint_roundtrip_through_our_writer(spec, tmp_path):
    cfg = OctoConfig.tiny()
    flat = spec.random_tree(spec.policy_shapes(**spec.tiny_kwargs()), seed=1)
    write_octo_checkpoint(tmp_path / "ck", flat, cfg, step=12)
    ckpt = load_octo_checkpoint(tmp_path / "ck")
    assert ckpt.config == cfg  # image sizes recovered from example_batch.msgpack
    assert ckpt.report.ok and ckpt.step == 12
    for k, v in export_flax_params(ckpt.transformer).items():
        assert np.array_equal(v, flat[k]), k
    # Also accepts the step folder and the params file itself.
    assert load_octo_checkpoint(tmp_path / "ck" / "12").report.ok
    assert load_octo_checkpoint(tmp_path / "ck" / "12" / "default" / "checkpoint").report.ok


def test_torch_checkpoint_roundtrip(tmp_path):
    m = OctoTransformer(OctoConfig.tiny())
    save_torch_checkpoint(tmp_path / "octo.pt", m, dataset_statistics={"a": 1})
    ck = load_torch_checkpoint(tmp_path / "octo.pt")
    assert ck.config == m.config and ck.report.ok and ck.dataset_statistics == {"a": 1}
    for (k, a), (_, b) in zip(m.state_dict().items(), ck.transformer.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(OctoCheckpointError, match="not a torchrl_chunk Octo checkpoint"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        load_torch_checkpoint(tmp_path / "other.pt")


# ---------------------------------------------------------------------- error paths
def _tiny_ckpt(spec, root: Path, cfg: OctoConfig | None = None, **shape_kw) -> dict:
    cfg = cfg or OctoConfig.tiny()
    flat = spec.random_tree(spec.policy_shapes(**{**spec.tiny_kwargs(), **shape_kw}), seed=2)
    write_octo_checkpoint(root, flat, cfg)
    return flat


def test_error_not_a_checkpoint(tmp_path):
    with pytest.raises(OctoCheckpointError, match="does not exist"):
        load_octo_checkpoint(tmp_path / "nope")
    with pytest.raises(OctoCheckpointError, match="no config.json"):
        load_octo_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OctoCheckpointError, match="no step folder"):
        load_octo_checkpoint(tmp_path)
    (tmp_path / "5" / "default").mkdir(parents=True)
    with pytest.raises(OctoCheckpointError, match="no 'checkpoint' file"):
        load_octo_checkpoint(tmp_path)
    (tmp_path / "5" / "default" / "checkpoint").write_bytes(msgpack_serialize({"a": np.zeros(1)}))
    with pytest.raises(OctoCheckpointError, match="no 'model' section"):
        load_octo_checkpoint(tmp_path)


def test_error_version_mismatch(spec, tmp_path):
    _tiny_ckpt(spec, tmp_path / "v10", OctoConfig.tiny(repeat_task_tokens=False, use_correct_attention=False))
    ck = load_octo_checkpoint(tmp_path / "v10")  # builds a 1.0 module by itself
    assert ck.config.version == "1.0" and not ck.config.use_correct_attention
    with pytest.raises(OctoVersionMismatchError, match=r"Octo 1.0 checkpoint .* configured as Octo 1.5"):
        load_octo_checkpoint(tmp_path / "v10", OctoTransformer(OctoConfig.tiny()))
    with pytest.raises(OctoVersionMismatchError, match="1.5 was expected"):
        load_octo_checkpoint(tmp_path / "v10", expected_version="1.5")


def test_error_shape_mismatch_names_leaf_and_shapes(spec, tmp_path):
    _tiny_ckpt(spec, tmp_path / "ck", d=48)  # tree of width 48 vs config width 32
    raw = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert raw["model"]["token_embedding_size"] == 32
    with pytest.raises(OctoShapeMismatchError) as err:
        load_octo_checkpoint(tmp_path / "ck")
    msg = str(err.value)
    assert "octo_transformer/task_language_projection/kernel: checkpoint (768, 48)" in msg
    assert "task_language_projection.weight (32, 768)" in msg


def test_missing_and_unexpected_are_reported(spec, tmp_path):
    flat = spec.random_tree(spec.policy_shapes(**spec.tiny_kwargs()), seed=3)
    gone = "octo_transformer/readout_action_pos_embedding"
    flat.pop(gone)
    flat["octo_transformer/obs_proprio_projection/kernel"] = np.zeros((1, 32), np.float32)
    write_octo_checkpoint(tmp_path / "ck", flat, OctoConfig.tiny())
    with pytest.raises(OctoCheckpointError, match="strict=False"):
        load_octo_checkpoint(tmp_path / "ck")
    rep = load_octo_checkpoint(tmp_path / "ck", strict=False).report
    assert rep.missing == ["readout_action_pos_embedding"]
    assert rep.unexpected == ["octo_transformer/obs_proprio_projection/kernel"]


def test_placeholder_leaves_are_refused(spec, tmp_path):
    flat = spec.random_tree(spec.policy_shapes(**spec.tiny_kwargs()), seed=4)
    flat["octo_transformer/task_language_pos_embedding"] = "PLACEHOLDER://octo_transformer.x"
    write_octo_checkpoint(tmp_path / "ck", flat, OctoConfig.tiny())
    with pytest.raises(OctoCheckpointError, match="placeholders"):
        load_octo_checkpoint(tmp_path / "ck")


def test_msgpack_roundtrip_without_flax():
    tree = {"a": {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "0": np.zeros((), np.int32)},
            "s": np.float32(2.5)}
    back = msgpack_restore(msgpack_serialize(tree))
    assert np.array_equal(back["a"]["b"], tree["a"]["b"]) and back["s"] == 2.5
    assert flatten_tree(back).keys() == {"a/b", "a/0", "s"}


@pytest.mark.jax
def test_msgpack_format_matches_flax_serialization(spec):
    serialization = pytest.importorskip("flax.serialization")
    tree = unflatten_tree(spec.random_tree(spec.policy_shapes(**spec.tiny_kwargs()), seed=5))
    ours, theirs = msgpack_serialize(tree), serialization.msgpack_serialize(tree)
    for a, b in ((ours, theirs), (theirs, ours)):
        x, y = flatten_tree(msgpack_restore(a)), flatten_tree(serialization.msgpack_restore(b))
        assert x.keys() == y.keys()
        assert all(np.array_equal(x[k], y[k]) for k in x)


# ---------------------------------------------------------------------- T5
def test_t5_leaves_convert_to_hf_names(spec, tmp_path):
    t5_kw = dict(vocab=50, d=16, ff=32, layers=2, heads=4, buckets=32)
    flat = spec.random_tree(spec.policy_shapes(**spec.tiny_kwargs()), seed=6)
    t5 = spec.random_tree(spec.t5_shapes(**t5_kw), seed=7)
    write_octo_checkpoint(tmp_path / "ck", {**flat, **t5}, OctoConfig.tiny())
    ck = load_octo_checkpoint(tmp_path / "ck")
    assert ck.report.ok and len(ck.report.t5) == len(t5)
    sd = ck.t5_state_dict
    assert sd["shared.weight"].shape == (50, 16)
    pre = "octo_transformer/task_tokenizers_language/hf_model/"
    assert torch.equal(
        sd["encoder.block.1.layer.1.DenseReluDense.wi.weight"],
        torch.from_numpy(t5[pre + "encoder/block/1/layer/1/DenseReluDense/wi/kernel"]).T,
    )
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in sd

    transformers = pytest.importorskip("transformers", reason="transformers not installed (octo extra)")
    from torchrl_chunk.modules.octo import t5_encoder_from_state_dict

    cfg = transformers.T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                                num_heads=4, feed_forward_proj="relu", dropout_rate=0.0)
    enc = t5_encoder_from_state_dict(sd, cfg)
    ids = torch.tensor([[3, 7, 1, 0]])
    out = enc(input_ids=ids, attention_mask=(ids > 0).long()).last_hidden_state
    assert out.shape == (1, 4, 16) and torch.isfinite(out).all()
    assert enc.encoder.embed_tokens.weight.data_ptr() == enc.shared.weight.data_ptr()


@pytest.mark.slow
def test_full_366_leaf_checkpoint_with_t5(spec, tmp_path):
    flat = {**spec.random_tree(spec.policy_shapes(), 0), **spec.random_tree(spec.t5_shapes(), 1)}
    assert len(flat) == 366
    assert sum(v.size for v in flat.values()) == 136_670_604
    write_official(tmp_path / "ck", flat, official_config_json("1.5"))
    ck = load_octo_checkpoint(tmp_path / "ck")
    assert ck.report.ok and ck.report.t5_params == 109_628_544 and len(ck.report.t5) == 99
