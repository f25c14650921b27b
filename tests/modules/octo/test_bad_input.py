"""Bad checkpoint files end in one-line errors that name the file, the problem and the fix.

Every file here is made by the test: a good tiny checkpoint (official layout or our torch
file) is written, then damaged in one way.
"""

from __future__ import annotations

import json
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
    export_flax_params,
    load_octo_checkpoint,
    load_torch_checkpoint,
    make_octo_actor_critic,
    save_torch_checkpoint,
)
from torchrl_chunk.modules.octo.serialization import msgpack_serialize, unflatten_tree


def one_line_error(err_type, fn, *args, match: str | None = None, **kwargs) -> str:
    """Call ``fn``, expect ``err_type`` with a single-line message; return the message."""
    with pytest.raises(err_type, match=match) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"multi-line error:\n{msg}"
    return msg


@pytest.fixture
def official(tmp_path) -> Path:
    """A good tiny checkpoint in the official layout; returns its root."""
    root = tmp_path / "octo-tiny"
    write_octo_checkpoint(root, export_flax_params(OctoTransformer(OctoConfig.tiny())), OctoConfig.tiny())
    return root


@pytest.fixture
def torch_file(tmp_path) -> Path:
    path = tmp_path / "octo.pt"
    save_torch_checkpoint(path, OctoTransformer(OctoConfig.tiny()))
    return path


def params_file(root: Path) -> Path:
    return root / "300000" / "default" / "checkpoint"


# ------------------------------------------------------------------ official directories
@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b"this is a text file, not msgpack\n", id="text"),
        pytest.param(lambda b: b + b"\x00\x01", id="trailing-bytes"),
    ],
)
def test_damaged_params_file_names_the_file(official, damage):
    f = params_file(official)
    f.write_bytes(damage(f.read_bytes()))
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, official)
    assert str(f) in msg and "download it again" in msg


def test_truncated_example_batch_names_the_file(official):
    f = official / "example_batch.msgpack"
    f.write_bytes(f.read_bytes()[:-5])
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, official)
    assert str(f) in msg


def test_corrupt_array_payload_names_the_file(official):
    import msgpack

    bad = msgpack.ExtType(1, msgpack.packb(((3, 4), "float32", b"\x00" * 7), use_bin_type=True))
    params_file(official).write_bytes(msgpack.packb({"octo_transformer": {"x": bad}}, use_bin_type=True))
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, official)
    assert str(params_file(official)) in msg


@pytest.mark.parametrize(
    "content, match",
    [
        pytest.param('{"model": ', "is not valid JSON", id="truncated-json"),
        pytest.param("[1, 2]", "not an object", id="json-list"),
        pytest.param('{"model": {"token_embedding_size": 32, "transformer_kwargs": {}, '
                     '"readouts": {"action": 1}, "task_tokenizers": {"language": {}}}}',
                     "malformed", id="missing-num_layers"),
        pytest.param('{"model": {"token_embedding_size": "wide", "transformer_kwargs": {}}}',
                     "malformed", id="wrong-type"),
    ],
)
def test_bad_config_json_names_the_file(official, content, match):
    (official / "config.json").write_text(content)
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, official, match=match)
    assert str(official) in msg and ("download" in msg)


def test_bad_dataset_statistics_names_the_file(official):
    (official / "dataset_statistics.json").write_text("{not json")
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, official)
    assert str(official / "dataset_statistics.json") in msg


def test_params_that_are_not_a_tree(official):
    params_file(official).write_bytes(msgpack_serialize({}))
    one_line_error(OctoCheckpointError, load_octo_checkpoint, official, match="empty tree")


def test_directory_without_the_expected_files(tmp_path, torch_file):
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, tmp_path / "nope", match="does not exist")
    assert "convert checkpoint" in msg
    one_line_error(OctoCheckpointError, load_octo_checkpoint, tmp_path, match="no config.json")
    # a torch file given to the directory loader points at the right loader
    one_line_error(OctoCheckpointError, load_octo_checkpoint, torch_file, match="load_torch_checkpoint")


def test_other_tree_is_one_line_with_the_fix(official):
    flat = export_flax_params(OctoTransformer(OctoConfig.tiny()))
    flat.pop("octo_transformer/readout_action_pos_embedding")
    flat["octo_transformer/obs_proprio_projection/kernel"] = np.zeros((1, 32), np.float32)
    from torchrl_chunk.modules.octo.serialization import write_msgpack_file

    write_msgpack_file(params_file(official), unflatten_tree(flat))
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, official, match="strict=False")
    assert "readout_action_pos_embedding" in msg and "obs_proprio_projection" in msg
    assert str(params_file(official)) in msg


def test_wrong_shapes_and_wrong_rank_are_one_line(official):
    from torchrl_chunk.modules.octo.serialization import write_msgpack_file

    flat = export_flax_params(OctoTransformer(OctoConfig.tiny()))
    conv = "octo_transformer/observation_tokenizers_primary/SmallStem16_0/StdConv_0/kernel"
    flat[conv] = np.zeros((3, 3), np.float32)  # a conv kernel of the wrong rank
    flat["octo_transformer/task_language_projection/kernel"] = np.zeros((768, 48), np.float32)
    write_msgpack_file(params_file(official), unflatten_tree(flat))
    msg = one_line_error(OctoShapeMismatchError, load_octo_checkpoint, official)
    assert msg.startswith("2 leaves of") and conv in msg and "(768, 48)" in msg


def test_non_finite_leaf_is_refused(official):
    from torchrl_chunk.modules.octo.serialization import write_msgpack_file

    flat = export_flax_params(OctoTransformer(OctoConfig.tiny()))
    leaf = "octo_transformer/obs_primary_projection/bias"
    flat[leaf] = flat[leaf].copy()
    flat[leaf][0] = np.nan
    write_msgpack_file(params_file(official), unflatten_tree(flat))
    msg = one_line_error(OctoCheckpointError, load_octo_checkpoint, official, match="NaN or inf")
    assert leaf in msg


# ------------------------------------------------------------------ our torch files
def test_torch_loader_on_a_text_file(tmp_path):
    f = tmp_path / "octo.pt"
    f.write_text("some notes, not weights\n")  # torch.load itself: KeyError: 105
    msg = one_line_error(OctoCheckpointError, load_torch_checkpoint, f, match="cannot be read by torch.load")
    assert str(f) in msg and "convert checkpoint" in msg


def test_torch_loader_on_a_truncated_file(torch_file):
    torch_file.write_bytes(torch_file.read_bytes()[:-100])
    msg = one_line_error(OctoCheckpointError, load_torch_checkpoint, torch_file, match="truncated")
    assert str(torch_file) in msg


def test_torch_loader_on_a_directory_or_missing_file(official, tmp_path):
    one_line_error(OctoCheckpointError, load_torch_checkpoint, official, match="load_octo_checkpoint")
    one_line_error(OctoCheckpointError, load_torch_checkpoint, tmp_path / "none.pt", match="does not exist")


@pytest.mark.parametrize(
    "edit, match",
    [
        pytest.param(lambda b: b.pop("state_dict"), "'state_dict'", id="no-state-dict"),
        pytest.param(lambda b: b.update(format_version=99), "format_version 99", id="newer-format"),
        pytest.param(lambda b: b["config"].update(num_layers="two"), "config is invalid", id="bad-config"),
        pytest.param(lambda b: b["config"].update(colour=1), "config is invalid", id="unknown-field"),
        pytest.param(lambda b: b["state_dict"].update(x=[1, 2]), "not tensors", id="non-tensor"),
    ],
)
def test_torch_file_with_bad_parts(torch_file, edit, match):
    blob = torch.load(torch_file, weights_only=True)
    edit(blob)
    torch.save(blob, torch_file)
    msg = one_line_error(OctoCheckpointError, load_torch_checkpoint, torch_file, match=match)
    assert str(torch_file) in msg


def test_torch_file_other_tree_shapes_and_nan(torch_file):
    blob = torch.load(torch_file, weights_only=True)
    good = {k: v.clone() for k, v in blob["state_dict"].items()}
    blob["state_dict"].pop("readout_action_pos_embedding")
    torch.save(blob, torch_file)
    one_line_error(OctoCheckpointError, load_torch_checkpoint, torch_file, match="strict=False")
    assert not load_torch_checkpoint(torch_file, strict=False).report.ok

    blob["state_dict"] = dict(good, **{"task_language_projection.bias": torch.zeros(48)})
    torch.save(blob, torch_file)
    msg = one_line_error(OctoShapeMismatchError, load_torch_checkpoint, torch_file)
    assert "task_language_projection.bias: file (48,) vs module (32,)" in msg

    blob["state_dict"] = dict(good)
    blob["state_dict"]["task_language_projection.bias"] = torch.full((32,), float("inf"))
    torch.save(blob, torch_file)
    one_line_error(OctoCheckpointError, load_torch_checkpoint, torch_file, match="NaN or inf")


# ------------------------------------------------------------------ the factory's inputs
def test_factory_instruction_table_errors(tmp_path, torch_file):
    table = torch.zeros(3, 16, 768)
    with pytest.raises(ValueError, match="is not an existing file"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=str(tmp_path / "mt10_t5.pt"))
    (tmp_path / "notes.pt").write_text("not a table")
    with pytest.raises(ValueError, match="cannot be read by torch.load"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=tmp_path / "notes.pt")
    torch.save({"emb": table}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no 'embeddings' tensor"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not exist"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("x")
    with pytest.raises(OctoCheckpointError, match="cannot be read by torch.load"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=table, checkpoint=tmp_path / "bad.pt")
    with pytest.raises(OctoCheckpointError, match="does not exist"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=table, checkpoint=tmp_path / "gone")


def test_convert_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from torchrl_chunk.modules.octo.convert import main

    (tmp_path / "ck").mkdir()
    with pytest.raises(SystemExit) as info:
        main(["checkpoint", str(tmp_path / "ck"), str(tmp_path / "octo.pt")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no config.json" in err
    assert not (tmp_path / "octo.pt").exists()
