"""Forward-pass structure of the Octo backbone and the TorchRL actor/critic factory."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from torchrl_chunk.keys import IMAGE_KEY, SAMPLE_LOG_PROB_KEY, TASK_ID_KEY
from modules.octo.octo_writer import write_octo_checkpoint
from torchrl_chunk.modules.octo import (
    InstructionEmbeddings,
    OctoConfig,
    OctoTransformer,
    count_parameters,
    make_octo_actor_critic,
    export_flax_params,
    find_octo_backbones,
)

NUM_TASKS = 3


def table(seed=0, dim=768):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(NUM_TASKS, 16, dim, generator=g)


def obs(batch, window, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, size, size, 3) if window == 1 else (*batch, window, size, size, 3)
    return TensorDict(
        {
            IMAGE_KEY: torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
            TASK_ID_KEY: torch.randint(0, NUM_TASKS, (*batch, 1), generator=g),
        },
        list(batch),
    )


def test_full_size_parameter_counts():
    m = OctoTransformer(OctoConfig())
    assert count_parameters(m) == 25_338_496  # spec 5.1, backbone without heads
    actor, critic = make_octo_actor_critic(OctoConfig(), chunk_size=4, action_dim=7, instructions=table())
    params = {id(p): p for p in list(actor.parameters()) + list(critic.parameters())}
    # spec 5.1: backbone + Linear(384, 28) + 28 log-stds + Linear(384, 1)
    assert sum(p.numel() for p in params.values()) == 25_349_689


@pytest.mark.parametrize("window", [1, 2])
def test_actor_critic_shapes_and_shared_backbone(window):
    torch.manual_seed(0)
    cfg = OctoConfig.tiny(window_size=window)
    actor, critic = make_octo_actor_critic(cfg, chunk_size=4, action_dim=4, instructions=table())
    td = obs((5,), window)
    actor(td)
    assert td["action"].shape == (5, 4, 4)
    assert td[SAMPLE_LOG_PROB_KEY].shape == (5,)  # joint chunk log-prob
    assert td["embedding"].shape == (5, 32)
    critic(td)
    assert td["state_value"].shape == (5, 1)
    a_params = {id(p) for p in actor.parameters()}
    shared = [p for p in critic.parameters() if id(p) in a_params]
    (backbone,) = find_octo_backbones(actor)
    assert find_octo_backbones(critic) == [backbone]
    assert len(shared) == len(list(backbone.parameters()))  # the whole backbone


def test_separate_critic_has_its_own_equal_backbone():
    cfg = OctoConfig.tiny(window_size=1)
    actor, critic = make_octo_actor_critic(cfg, instructions=table(), separate_critic=True)
    a_params = {id(p) for p in actor.parameters()}
    assert not any(id(p) in a_params for p in critic.parameters())
    td = obs((2,), 1)
    with torch.no_grad():
        e1 = actor(td.clone())["embedding"]
        e2 = critic(td.clone())["embedding"]
    assert find_octo_backbones(actor)[0] is not find_octo_backbones(critic)[0]
    torch.testing.assert_close(e1, e2)


def test_multiple_batch_dims_and_ppo_gradients():
    cfg = OctoConfig.tiny(window_size=2)
    actor, critic = make_octo_actor_critic(cfg, instructions=table())
    td = obs((2, 3), 2)
    actor(td)
    assert td["action"].shape == (2, 3, 4, 4) and td[SAMPLE_LOG_PROB_KEY].shape == (2, 3)
    dist = actor.get_dist(td)
    loss = -(dist.log_prob(td["action"]).mean()) + critic(td)["state_value"].pow(2).mean()
    loss.backward()
    (backbone,) = find_octo_backbones(actor)
    stem = backbone.transformer.observation_tokenizers_primary.SmallStem16_0
    assert stem.StdConv_0.weight.grad is not None and stem.StdConv_0.weight.grad.abs().sum() > 0
    # the wrist camera is not fed, so its weights get no gradient
    wrist = backbone.transformer.observation_tokenizers_wrist.SmallStem16_0
    assert wrist.StdConv_0.weight.grad is None


def _run(m, images, lang, **kw):
    with torch.no_grad():
        return m({"primary": images}, lang, **kw)


def test_causality_padding_and_readout_isolation():
    torch.manual_seed(0)
    cfg = OctoConfig.tiny()
    m = OctoTransformer(cfg)
    x = torch.randint(0, 256, (2, 2, 3, 32, 32)).float()
    lang = torch.randn(2, 16, 768)
    base = _run(m, x, lang)
    # the past does not see the future
    x2 = x.clone()
    x2[:, 1] = 255 - x2[:, 1]
    out = _run(m, x2, lang)
    torch.testing.assert_close(out["readout_action"][:, 0], base["readout_action"][:, 0])
    assert not torch.allclose(out["readout_action"][:, 1], base["readout_action"][:, 1])
    # nothing but readouts reads the readout tokens
    with torch.no_grad():
        m.readout_action_pos_embedding.add_(1.0)
    out = _run(m, x, lang)
    torch.testing.assert_close(out["obs_primary"], base["obs_primary"])
    torch.testing.assert_close(out["task_language"], base["task_language"])
    # a padded first timestep is invisible to the current readout
    pad = torch.tensor([[False, True], [False, True]])
    a = _run(m, x, lang, timestep_pad_mask=pad)
    x3 = x.clone()
    x3[:, 0] = 0
    b = _run(m, x3, lang, timestep_pad_mask=pad)
    torch.testing.assert_close(a["readout_action"][:, 1], b["readout_action"][:, 1])


def test_absent_language_is_masked_and_finite():
    m = OctoTransformer(OctoConfig.tiny())
    x = torch.randint(0, 256, (2, 2, 3, 32, 32)).float()
    off = torch.zeros(2, dtype=torch.bool)
    a = _run(m, x, torch.randn(2, 16, 768), language_mask=off)
    b = _run(m, x, torch.randn(2, 16, 768), language_mask=off)
    assert torch.isfinite(a["task_language"]).all()  # fully masked rows: no NaN
    torch.testing.assert_close(a["readout_action"], b["readout_action"])


def test_time_position_offset_for_window_one():
    cfg0 = OctoConfig.tiny(window_size=1)
    cfg1 = OctoConfig.tiny(window_size=1, time_position_offset=1)
    m0 = OctoTransformer(cfg0)
    m1 = OctoTransformer(cfg1)
    m1.load_state_dict(m0.state_dict())
    with torch.no_grad():  # make time index 1 equal to index 0 -> identical outputs
        for m in (m0, m1):
            for name in ("obs_primary_pos_embedding", "readout_action_pos_embedding"):
                p = getattr(m, name)
                p[:, 1] = p[:, 0]
    x = torch.randint(0, 256, (1, 1, 3, 32, 32)).float()
    lang = torch.randn(1, 16, 768)
    torch.testing.assert_close(_run(m0, x, lang)["readout_action"], _run(m1, x, lang)["readout_action"])
    with torch.no_grad():
        m1.readout_action_pos_embedding[:, 1] += torch.randn_like(m1.readout_action_pos_embedding[:, 1])
    assert not torch.allclose(_run(m0, x, lang)["readout_action"], _run(m1, x, lang)["readout_action"])
    with pytest.raises(ValueError, match="max_horizon"):
        OctoConfig.tiny(window_size=2, time_position_offset=9)


def test_input_errors_are_explicit():
    actor, _ = make_octo_actor_critic(OctoConfig.tiny(window_size=2), instructions=table())
    with pytest.raises(ValueError, match=r"CatFrames"):
        actor(obs((3,), 1))
    actor1, _ = make_octo_actor_critic(OctoConfig.tiny(window_size=1), instructions=table())
    td = obs((2,), 1)
    td[TASK_ID_KEY] = torch.tensor([[0], [NUM_TASKS]])
    with pytest.raises(IndexError, match="task_id out of range"):
        actor1(td)
    with pytest.raises(ValueError, match="t5_path"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=["open the drawer"])
    with pytest.raises(ValueError, match=r"\[num_tasks, 16, 768\]"):
        make_octo_actor_critic(OctoConfig.tiny(), instructions=torch.zeros(2, 16, 512))


def test_factory_loads_pretrained_weights(tmp_path):
    src = OctoTransformer(OctoConfig.tiny())
    write_octo_checkpoint(tmp_path / "ck", export_flax_params(src), OctoConfig.tiny())
    actor, critic = make_octo_actor_critic(
        None, instructions=InstructionEmbeddings(table()), checkpoint=tmp_path / "ck",
        separate_critic=True,
    )
    for backbone in find_octo_backbones(actor) + find_octo_backbones(critic):
        for (k, a), (_, b) in zip(src.state_dict().items(), backbone.transformer.state_dict().items()):
            assert torch.equal(a, b), k
    # window / time offset are run-time choices on top of the same architecture
    actor, _ = make_octo_actor_critic(
        OctoConfig.tiny(window_size=1), instructions=table(), checkpoint=tmp_path / "ck"
    )
    actor(obs((2,), 1))


def test_t5_encoder_wrapper_without_tokenizer():
    transformers = pytest.importorskip("transformers", reason="transformers not installed (octo extra)")
    from torchrl_chunk.modules.octo import T5LanguageEncoder

    cfg = transformers.T5Config(vocab_size=40, d_model=768, d_kv=8, d_ff=32, num_layers=1,
                                num_heads=2, feed_forward_proj="relu")
    enc = T5LanguageEncoder(transformers.T5EncoderModel(cfg))
    assert not any(p.requires_grad for p in enc.parameters())
    ids = torch.randint(2, 40, (NUM_TASKS, 16))
    emb = enc.encode_ids(ids, torch.ones_like(ids))
    assert emb.shape == (NUM_TASKS, 16, 768)
    actor, _ = make_octo_actor_critic(OctoConfig.tiny(window_size=1), instructions=emb)
    actor(obs((2,), 1))


def test_convert_cli_and_instruction_file(tmp_path):
    from torchrl_chunk.modules.octo.convert import main

    src = OctoTransformer(OctoConfig.tiny())
    write_octo_checkpoint(tmp_path / "ck", export_flax_params(src), OctoConfig.tiny())
    main(["checkpoint", str(tmp_path / "ck"), str(tmp_path / "octo.pt")])
    torch.save({"embeddings": table(), "mask": torch.ones(NUM_TASKS, dtype=torch.bool)},
               tmp_path / "instr.pt")
    actor, _ = make_octo_actor_critic(
        OctoConfig.tiny(window_size=1), instructions=str(tmp_path / "instr.pt"),
        checkpoint=tmp_path / "octo.pt",
    )
    (backbone,) = find_octo_backbones(actor)
    for (k, a), (_, b) in zip(src.state_dict().items(), backbone.transformer.state_dict().items()):
        assert torch.equal(a, b), k
    actor(obs((2,), 1))


def test_convert_instructions_are_passed_in(tmp_path, capsys, monkeypatch):
    """The converter has no built-in task list: --text or --file is required."""
    import io

    from torchrl_chunk.modules.octo.convert import main, read_instructions

    with pytest.raises(SystemExit) as info:
        main(["instructions", str(tmp_path), str(tmp_path / "t.pt")])
    assert info.value.code == 2 and "--text" in capsys.readouterr().err
    (tmp_path / "mt.txt").write_text("reach the goal\n\n  push the puck \n")
    assert read_instructions(str(tmp_path / "mt.txt")) == ["reach the goal", "push the puck"]
    monkeypatch.setattr("sys.stdin", io.StringIO("open the door\n"))
    assert read_instructions("-") == ["open the door"]
    with pytest.raises(SystemExit) as info:
        main(["instructions", str(tmp_path), str(tmp_path / "t.pt"), "--file", str(tmp_path / "none.txt")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "none.txt" in err and err.count("\n") == 1


def test_make_octo_actor_critic_takes_chunk_size_and_still_the_old_keyword():
    from torchrl_chunk.modules import chunk_head

    cfg = OctoConfig.tiny(window_size=1)
    assert chunk_head(make_octo_actor_critic(cfg, 3, 4, instructions=table())[0]).chunk_size == 3  # by position
    with pytest.warns(DeprecationWarning, match="`horizon=` is deprecated, use `chunk_size=`"):
        actor, _ = make_octo_actor_critic(cfg, horizon=3, action_dim=4, instructions=table())
    assert chunk_head(actor).log_std.shape == (3, 4)
    with pytest.raises(TypeError, match="both"):
        make_octo_actor_critic(cfg, 3, horizon=3, instructions=table())
