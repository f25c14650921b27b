"""``model=tiny_vla``: TorchRL's own TinyVLA SFT'd and post-trained on MetaWorld by the recipe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from _gl import requires_gl

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "mt10.py"
# the smoke preset on reach-v3 with 32 px frames rendered in this process: SFT and Ours, the
# latter two post-training iterations (beta_t = tanh(t / 100) is 0 in the first, 0.9 in the second)
ARGS = ["preset=smoke", "model=tiny_vla", "env.image_size=32", "env.num_envs=2", "env.num_workers=1",
        "train.total_env_steps=200", "schedule.warmup_steps=100", "eval.episodes=2", "eval.num_envs=2",
        "train.quick_eval_episodes=1", "eval.video_episodes=0", "run_dir=run"]


def weights(job_dir: Path, module: str = "actor") -> dict:
    return torch.load(job_dir / "checkpoint/state.pt", weights_only=False)["modules"][module]


@requires_gl
def test_tiny_vla_is_sft_then_post_trained_by_the_recipe(tmp_path):
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(RECIPE), *ARGS], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    jobs = {algo: run / f"jobs/{algo}/reach-v3/seed_1" for algo in ("sft", "ours")}
    sft, ours = (json.loads((jobs[a] / "result.json").read_text()) for a in ("sft", "ours"))
    assert sft["env_steps"] == 0 and sft["metrics"]["num_episodes"] == 2
    assert ours["env_steps"] >= 200 and ours["updates"] > 0 and ours["metrics"]["num_episodes"] == 2
    scalars = next((jobs["ours"] / "logs").glob("*/scalars"))
    for name in ("loss_objective", "loss_critic", "loss_bc", "explained_variance"):
        values = [float(line.split(",")[1]) for line in (scalars / f"{name}.csv").read_text().splitlines()]
        assert values and all(math.isfinite(v) for v in values), name

    # the job's model, rebuilt as make_job builds it (same seed, same cached demos): TinyVLA inside
    sys.path.insert(0, str(ROOT / "recipes"))
    import mt10_utils as u
    from torchrl.modules.vla import TinyVLA

    from torchrl_chunk.envs import derive_seed
    from torchrl_chunk.modules.vla import vla_chunk_scale

    cfg = OmegaConf.load(run / "config.yaml")
    demos = u.expert_demos(cfg, "reach-v3", int(cfg.demos.num))
    torch.manual_seed(derive_seed(int(cfg.seed), 0, u.Seeds.INIT))  # reach-v3 is task 0
    actor, critic = u.build_model(cfg, demos, 4)
    assert any(isinstance(m, TinyVLA) for m in actor.modules())
    init = {k: v.clone() for k, v in actor.state_dict().items()}
    batch = torch.cat(demos.trajectories)[:64]

    def bc_mse(state_dict) -> float:
        actor.load_state_dict(state_dict)  # the checkpoint fits the rebuilt model exactly
        with torch.no_grad():
            loc = actor(batch.clone())["loc"]
        return float(((loc[:-3, 0] - batch["action"][:-3]) ** 2).mean())  # first step of each chunk

    # SFT moved the VLA towards the expert actions; PPO then trained the chunk Gaussian's scale
    # (only PPO's term does: the BC form is mse) and the value head on the VLA's trunk
    trained = {algo: weights(jobs[algo]) for algo in jobs}
    head = "module.0.module.0.module.vla.head.weight"
    assert not torch.equal(trained["sft"][head], init[head])
    assert bc_mse(trained["sft"]) < bc_mse(init)
    log_std = next(k for k in init if k.endswith("log_std"))
    torch.testing.assert_close(trained["sft"][log_std], init[log_std])  # bc.loss_form=mse leaves it
    assert not torch.equal(trained["ours"][log_std], init[log_std])
    critic_init = {k: v.clone() for k, v in critic.state_dict().items()}
    critic.load_state_dict(weights(jobs["ours"], "critic"))  # the shared VLA and the value head
    value = next(k for k in critic_init if "value" in k and k.endswith("weight"))
    assert not torch.equal(critic.state_dict()[value], critic_init[value])
    actor.load_state_dict(trained["ours"])
    assert vla_chunk_scale(actor).log_std.shape == (4, 4)

    # resume= of a run made with another model than the default: settings added since (here
    # bc.share_sft, removed from its config.yaml) come from that model's composition, not from
    # model=mlp's (whose model.hidden the closed tiny_vla settings would refuse)
    saved = OmegaConf.load(run / "config.yaml")
    del saved.bc["share_sft"]
    OmegaConf.save(saved, run / "config.yaml")
    again = subprocess.run([sys.executable, str(RECIPE), "resume=run"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "settings not in its config.yaml, from the defaults: bc.share_sft" in again.stdout
    assert OmegaConf.load(run / "config.yaml").model.name == "tiny_vla"


def test_tiny_vla_is_an_allowed_model_name():
    sys.path.insert(0, str(ROOT / "recipes"))
    from mt10_config import CHOICES

    assert "tiny_vla" in CHOICES["model.name"]
    assert OmegaConf.load(ROOT / "recipes/conf/model/tiny_vla.yaml").needs_pixels is True  # TinyVLA needs an image
