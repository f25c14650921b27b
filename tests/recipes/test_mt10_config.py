"""The recipe's settings checks: every bad value named in one line, before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10_config  # noqa: E402
from _recipe_config import config, error_of  # noqa: E402

from torchrl_chunk.experiment import JobError  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_presets_pass():
    for preset in ("cpu", "paper", "smoke"):
        mt10_config.check_config(config(f"preset={preset}"))
    # every preset with every model matches the typed schema (a setting missing from mt10_config.py's,
    # or one of the schema missing from recipes/conf/, is named here)
    for preset in ("cpu", "paper", "smoke", "gpu"):
        for model in ("mlp", "pixel", "octo_small", "tiny_vla"):
            assert mt10_config.settings_problems(config(f"preset={preset}", f"model={model}")) == []


@pytest.mark.parametrize("preset", ["cpu", "smoke", "paper", "gpu"])
def test_presets_resolve_as_before(preset, monkeypatch):
    """The typed settings change no value and no type: each preset resolves exactly as before
    (tests/recipes/fixtures/preset_<name>.yaml, taken from the code before the typed settings). After an
    intended change of a default, write the fixture again from the new composition."""
    monkeypatch.delenv("TORCHRL_CHUNK_CACHE", raising=False)  # demos.cache_dir's default
    with initialize_config_dir(str(ROOT / "recipes" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[] if preset == "cpu" else [f"preset={preset}"])  # cpu: the default
    got = OmegaConf.to_yaml(OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)), sort_keys=True)
    expected = "".join(l for l in (FIXTURES / f"preset_{preset}.yaml").read_text().splitlines(True)
                       if not l.startswith("#"))
    assert got == expected  # YAML text: 0 and 0.0 and false differ, as they do in the run's config.yaml


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
    with pytest.raises(JobError) as err:
        mt10_config.resolve_tasks(config(override))
    assert str(err.value).startswith("error: tasks: ") and "\n" not in str(err.value)


def test_warmup_zero_is_no_warmup_as_the_library_documents():
    mt10_config.check_config(config("schedule.warmup_steps=0"))


# ----------------------------------------------------------------------------------------
# typed, closed settings (recipes/mt10_config.py's schema): wrong types and unknown keys, named
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        ("env.from_pixels=maybe", "env.from_pixels must be true or false, got 'maybe'"),
        ("env.from_pixels=yes", "env.from_pixels must be true or false, got 'yes'"),  # never guessed
        ("env.from_pixels=1", "env.from_pixels must be true or false, got 1"),
        ("schedule.scale_critic=0.3", "schedule.scale_critic must be true or false, got 0.3"),
        ("ppo.clip_value=yes", "ppo.clip_value must be true (clip the value loss at ppo.clip_epsilon), a number > 0 "
                               "(clip it there), false or null (no clipping), got 'yes'"),
        ("ppo.clip_value=-0.1", "ppo.clip_value must be true (clip at ppo.clip_epsilon), false, null or a number > 0, "
                                "got -0.1"),
        ("+train.trian=1", "train.trian is not a setting (train has total_env_steps, eval_every_env_steps, "
                           "quick_eval_episodes, checkpoint_every_iters): remove it or correct its name"),
        ("+train.total_env_step=1000", "train.total_env_step is not a setting (did you mean train.total_env_steps?)"),
        ("+trian.total_env_steps=1000", "trian is not a setting (did you mean train?)"),
        ("+model.channels=8", "model.channels is not a setting (model=mlp has name, needs_pixels"),
        ("+model.horizon=x", "model.horizon must be an integer or null, got 'x'"),
        ("algo.names=sft", "algo.names must be a list of strings, got 'sft'"),
        ("model.hidden=[256,a]", "model.hidden[1] must be an integer, got 'a'"),
        ("env.num_workers=1.5", "env.num_workers must be auto or an integer (worker processes), got 1.5"),
        ("buffer.length_limit=true", "buffer.length_limit must be null (the longest expert demo), an integer"),
        ("run_dir=2024", "run_dir must be a string or null, got 2024 (on the command line, quote it: run_dir='2024')"),
        ("optim.name=3", "optim.name must be a string, got 3"),
    ],
)
def test_wrong_types_and_unknown_keys_are_named(override, message):
    assert message in error_of(override)


def test_type_problems_are_reported_at_once_and_unions_take_each_type():
    msg = error_of("env.from_pixels=maybe", "schedule.scale_critic=0.3", "+train.trian=1")
    assert msg.count(";") >= 2 and all(k in msg for k in ("env.from_pixels", "schedule.scale_critic", "train.trian"))
    for override in ("ppo.clip_value=0.1", "ppo.clip_value=false", "ppo.clip_value=null", "ppo.clip_value=1",
                     "env.num_workers=2", "buffer.length_limit=adaptive", "buffer.length_limit=50", "optim.lr=1",
                     "+model.horizon=4", "env.from_pixels=false"):
        mt10_config.check_config(config(override))


def _conf_copy(tmp_path: Path, name: str, text: str) -> Path:
    """recipes/conf/ copied, with ``<name>.yaml``: a user's config for --config-path/--config-name."""
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "recipes" / "conf", conf)
    (conf / f"{name}.yaml").write_text(text)
    return conf


@pytest.mark.parametrize(
    "text, message",
    [
        ("trian:\n  total_env_steps: 1000\n", "trian is not a setting (did you mean train?)"),
        ("train:\n  total_env_step: 1000\n",
         "train.total_env_step is not a setting (did you mean train.total_env_steps?)"),
        ("env:\n  from_pixels: maybe\n", "env.from_pixels must be true or false, got 'maybe'"),
    ],
)
def test_a_yaml_given_with_config_name_is_checked(tmp_path, text, message):
    conf = _conf_copy(tmp_path, "exp", "defaults:\n  - config\n  - _self_\n" + text)
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("exp", overrides=["preset=smoke"])
    with pytest.raises(JobError) as err:
        mt10_config.check_config(cfg)
    assert str(err.value).startswith("error: ") and message in str(err.value) and "\n" not in str(err.value)


def test_a_resumed_run_keeps_the_keys_an_older_recipe_wrote():
    """``eval.video`` was a setting once: a run directory's config.yaml may hold it."""
    old = OmegaConf.to_container(config(), resolve=True)
    old["eval"]["video"] = False
    with pytest.raises(JobError, match="eval.video is not a setting"):
        mt10_config.check_config(OmegaConf.create(old))
    mt10_config.check_config(OmegaConf.create(old), allow=["eval.video"])
    old["eval"]["trian"] = 1  # a key the run did not write is still refused
    with pytest.raises(JobError, match="eval.trian is not a setting"):
        mt10_config.check_config(OmegaConf.create(old), allow=["eval.video"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["env.from_pixels=maybe"], "env.from_pixels must be true or false, got 'maybe'"),
        (["+train.trian=1"], "train.trian is not a setting"),
        (["--config-path", "{conf}", "--config-name", "exp"], "train.total_env_step is not a setting (did you mean "
                                                               "train.total_env_steps?)"),
    ],
)
def test_the_recipe_refuses_them_in_one_line_before_writing(tmp_path, args, message):
    conf = _conf_copy(tmp_path, "exp", "defaults:\n  - config\n  - _self_\ntrain:\n  total_env_step: 1000\n")
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "mt10.py"), *(a.format(conf=conf) for a in args),
                           "preset=smoke", "run_dir=run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert lines[0].endswith("Fix these settings and run again.")
    assert not (tmp_path / "run").exists()
