"""The recipe's settings checks: every bad value named in one line, before anything is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10_config  # noqa: E402


def config(*overrides):
    with initialize_config_dir(str(ROOT / "recipes" / "conf"), version_base="1.3"):
        return compose("config", overrides=["preset=smoke", *overrides])


def error_of(*overrides) -> str:
    with pytest.raises(SystemExit) as err:
        mt10_config.check_config(config(*overrides))
    msg = str(err.value)
    assert msg.startswith("error: ") and "\n" not in msg
    return msg


def test_presets_pass():
    for preset in ("cpu", "paper", "smoke"):
        mt10_config.check_config(config(f"preset={preset}"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.total_env_steps=-600", "train.total_env_steps must be >= 1, got -600"),
        ("buffer.length_limit=shrinking", "buffer.length_limit must be null (the longest expert demo), a number"),
        ("buffer.length_limit=0", "buffer.length_limit must be null"),
        ("buffer.adaptive.quantile=0", "buffer.adaptive.quantile must be > 0"),
        ("buffer.adaptive.min_successes=200", "buffer.adaptive.min_successes (200) must be <= buffer.adaptive.window"),
        ("buffer.length_weighting=-1", "buffer.length_weighting must be >= 0"),
        ("bc.decay_floor=1.5", "bc.decay_floor must be >= 0 and <= 1"),
        ("eval.episodes=0", "eval.episodes must be >= 1, got 0"),
        ("eval.episodes=129", "eval.episodes must be <= 128"),
        ("env.horizon=0", "env.horizon must be >= 1"),
        ("ppo.minibatch_size=2.5", "ppo.minibatch_size must be an integer, got 2.5"),
        ("optim.lr=0", "optim.lr must be > 0"),
        ("optim.lr=nan", "optim.lr must be a finite number"),
        ("schedule.warmup_steps=-1", "schedule.warmup_steps must be >= 0"),
        ("ppo.gamma=1.5", "ppo.gamma must be > 0 and <= 1"),
        ("buffer.max_size=0", "buffer.max_size must be >= 1"),
        ("env.num_workers=0", "env.num_workers must be auto or an integer in [1, env.num_envs=4], got 0"),
        ("env.num_workers=5", "env.num_workers must be auto or an integer in [1, env.num_envs=4], got 5"),
        ("train.quick_eval_episodes=9", "train.quick_eval_episodes must be <= eval.episodes"),
        ("bc.pretrain_lr=-1", "bc.pretrain_lr must be > 0"),
        ("model.name=resnet", "model.name must be one of mlp, pixel, octo_small"),  # (more models may follow)
        ("model.precision=fp16", "model.precision must be one of fp32, bf16, got 'fp16'"),
        ("algo.names=[nope]", "unknown algorithm(s) ['nope'] in algo.names"),
        ("buffer.mode=fifo", "buffer.mode must be one of filtered, static, unrestricted"),
        ("device=tpu", "device must be one of auto, cpu, cuda"),
        ("+model.horizon=3", "model.horizon=3 but algorithm"),
        ("model.task_embed_dim=-1", "model.task_embed_dim must be >= 1, got -1"),
        ("model.hidden=[256,0]", "model.hidden must be a non-empty list of layer widths >= 1"),
        ("seeds=[1,1]", "seeds must be null or a list of distinct integers >= 0"),
        ("seeds=[-1]", "seeds must be null or a list of distinct integers >= 0"),
        ("seeds=3", "seeds must be null or a list of distinct integers >= 0 (e.g. seeds=[1,2,3]), got 3"),
        ("launcher=slurm", "launcher must be one of local, ray"),
        ("collector.backend=ray collector.workers=3", "env.num_envs=4 to be a multiple of collector.workers=3"),
        ("collector.backend=ray env.num_workers=4", "set env.num_workers=1 and scale with collector.workers"),
        ("eval.workers=0", "eval.workers must be >= 1"),
        ("model.precision=bf16 collector.backend=ray", "model.precision=bf16 acts in bf16 only with collector.backend=local"),
        ("env.worker_timeout_s=0", "env.worker_timeout_s must be > 0"),
        ("ray.job_gpus=-1", "ray.job_gpus must be >= 0"),
    ],
)
def test_bad_settings_are_named(override, message):
    assert message in error_of(*override.split())


def test_ray_backends_without_ray_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    msg = error_of("eval.backend=ray")
    assert "eval.backend=ray: this needs Ray, which is not installed: pip install 'torchrl-chunk[ray]'" in msg
    mt10_config.check_config(config())  # the local backends need no Ray


def test_all_problems_are_reported_at_once():
    msg = error_of("train.total_env_steps=-1", "eval.episodes=0")
    assert "train.total_env_steps" in msg and "eval.episodes" in msg


def test_optional_settings_accept_null():
    mt10_config.check_config(config("bc.pretrain_lr=null", "buffer.length_limit=null", "optim.critic_lr=null"))
    mt10_config.check_config(config("buffer.length_limit=adaptive", "buffer.length_limit=60", "bc.decay_floor=0.1"))


def test_octo_instruction_table_must_hold_mt10_in_task_order(tmp_path):
    import torch

    from torchrl_chunk.envs import MT10_TASKS, TASK_INSTRUCTIONS

    mt10 = [TASK_INSTRUCTIONS[t] for t in MT10_TASKS]
    good, shuffled = tmp_path / "good.pt", tmp_path / "shuffled.pt"
    torch.save({"instructions": mt10, "embeddings": torch.zeros(10, 16, 768)}, good)
    torch.save({"instructions": mt10[::-1], "embeddings": torch.zeros(10, 16, 768)}, shuffled)
    mt10_config.check_config(config("model=octo_small", f"model.instructions={good}"))
    msg = error_of("model=octo_small", f"model.instructions={shuffled}")
    assert f"model.instructions={shuffled} does not hold MT10's 10 instructions in task order" in msg
    (tmp_path / "text.pt").write_text("not a table")
    assert "cannot be read" in error_of("model=octo_small", f"model.instructions={tmp_path / 'text.pt'}")


def test_gpu_jobs_on_ray_must_ask_for_gpus(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    msg = error_of("launcher=ray", "device=cuda")
    assert "launcher=ray with device=cuda needs ray.job_gpus > 0" in msg
    mt10_config.check_config(config("launcher=ray", "device=cuda", "ray.job_gpus=0.5"))


def test_tasks_presets_and_lists():
    from torchrl_chunk.envs.metaworld import ALL_V3_TASKS, MT10_TASKS

    assert mt10_config.resolve_tasks(config()) == ["reach-v3"]  # the smoke preset
    for value, expected in (("mt10", MT10_TASKS), ("all", MT10_TASKS), ("mt50", ALL_V3_TASKS)):
        cfg = config(f"tasks={value}")
        mt10_config.check_config(cfg)
        assert mt10_config.resolve_tasks(cfg) == list(expected)
    cfg = config("tasks=[sweep-v3,reach-v3,hand-insert-v3]")
    mt10_config.check_config(cfg)
    assert mt10_config.resolve_tasks(cfg) == ["sweep-v3", "reach-v3", "hand-insert-v3"]  # the given order
    assert mt10_config.resolve_tasks(config("tasks=door-lock-v3")) == ["door-lock-v3"]  # one name


@pytest.mark.parametrize(
    "override, message",
    [
        ("tasks=[reach-v3,sweep]", "tasks: unknown task(s) ['sweep']: Unknown MetaWorld v3 task 'sweep'. "
                                   "Did you mean 'sweep-v3', 'sweep-into-v3'?"),
        ("tasks=mt20", "tasks: tasks='mt20' is neither a preset (mt10, mt50, all) nor a task"),
        ("tasks=[push-v2]", "Did you mean 'push-v3', 'push-wall-v3', 'push-back-v3'?"),
        ("tasks=[reach-v3,reach-v3]", "tasks: task(s) ['reach-v3'] are listed more than once"),
        ("tasks=[]", "tasks: tasks is an empty list"),
    ],
)
def test_bad_tasks_are_named_with_the_closest_valid_ones(override, message):
    msg = error_of(override)
    assert message in msg
    with pytest.raises(SystemExit) as err:
        mt10_config.resolve_tasks(config(override))
    assert str(err.value).startswith("error: tasks: ") and "\n" not in str(err.value)


def test_warmup_zero_is_no_warmup_as_the_library_documents():
    mt10_config.check_config(config("schedule.warmup_steps=0"))
