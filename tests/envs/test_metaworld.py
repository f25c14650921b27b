"""MetaWorld env: task lists (MT10, MT50), keys, sparse reward, chunking with the scripted expert, seeding, pixels."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from _gl import requires_gl

from torchrl_chunk.envs import (
    EVAL_SEED,
    MT10_TASKS,
    TASK_INSTRUCTIONS,
    ChunkedEnv,
    MetaWorldEnv,
    NonFiniteActionError,
    NonFiniteObservationError,
    make_eval_configs,
    make_metaworld_env,
    task_index,
)
from torchrl_chunk.envs.metaworld import (
    ALL_V3_TASKS,
    MT50_TASKS,
    make_task_configs,
    num_task_ids,
    resolve_task_list,
    task_name,
)

REACH = "reach-v3"


def _rand_vecs(configs):
    import pickle

    return np.stack([pickle.loads(c.data)["rand_vec"] for c in configs])


def test_task_list_and_instructions():
    assert MT10_TASKS == (
        "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
        "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3",
        "window-open-v3", "window-close-v3",
    )  # fmt: skip
    assert set(MT10_TASKS) <= set(TASK_INSTRUCTIONS)
    assert task_index("door-open-v3") == 3


def test_mt50_task_list_matches_metaworld_and_keeps_mt10_ids():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    assert len(ALL_V3_TASKS) == 50 and MT50_TASKS == ALL_V3_TASKS
    assert set(ALL_V3_TASKS) == set(ALL_V3_ENVIRONMENTS)  # exactly MetaWorld's fifty
    assert set(ALL_V3_TASKS) <= set(ENV_POLICY_MAP)  # every task has a scripted expert
    assert ALL_V3_TASKS[:10] == MT10_TASKS  # MT10's ids 0..9 are what they always were
    assert [task_index(t) for t in MT10_TASKS] == list(range(10))
    # the other forty follow in MetaWorld's own order
    assert list(ALL_V3_TASKS[10:]) == [t for t in ALL_V3_ENVIRONMENTS if t not in MT10_TASKS]
    assert task_index("assembly-v3") == 10 and task_name(49) == "sweep-v3" == ALL_V3_TASKS[49]
    assert [task_index(task_name(i)) for i in range(50)] == list(range(50))
    assert num_task_ids("window-close-v3") == 10 and num_task_ids(9) == 10
    assert num_task_ids("assembly-v3") == 50 and num_task_ids("sweep-v3") == 50
    with pytest.raises(ValueError, match=r"valid indices are 0\.\.49"):
        task_index(50)


def test_every_task_has_its_own_instruction():
    assert set(TASK_INSTRUCTIONS) == set(ALL_V3_TASKS)
    assert all(isinstance(v, str) and v.strip() == v and v for v in TASK_INSTRUCTIONS.values())
    assert len(set(TASK_INSTRUCTIONS.values())) == 50  # no two tasks share a prompt
    # the MT10 prompts are unchanged (Octo instruction tables were made from them)
    assert TASK_INSTRUCTIONS["reach-v3"] == "reach the red goal position with the gripper"
    assert TASK_INSTRUCTIONS["window-close-v3"] == "slide the window closed"


def test_unknown_task_names_the_closest_valid_ones():
    with pytest.raises(ValueError) as err:
        make_metaworld_env("open-the-fridge")
    msg = str(err.value)
    assert "\n" not in msg and "Unknown MetaWorld v3 task 'open-the-fridge'." in msg
    assert "Did you mean" not in msg  # nothing is close: no guess, the full list instead
    assert "Valid tasks: reach-v3, push-v3" in msg and "window-close-v3" in msg and "sweep-v3" in msg
    with pytest.raises(ValueError, match="Did you mean 'reach-v3', 'reach-wall-v3'"):
        task_index("reach")
    with pytest.raises(ValueError, match="Did you mean 'pick-place-v3'"):
        task_index("pick_place-v2")
    with pytest.raises(ValueError, match="Did you mean 'button-press-topdown-v3'"):
        task_name("button-press-top")


def test_task_list_presets_and_lists():
    assert resolve_task_list("mt10") == list(MT10_TASKS) == resolve_task_list("all")
    assert resolve_task_list("mt50") == list(ALL_V3_TASKS) == resolve_task_list("MT50")
    assert resolve_task_list(["sweep-v3", "reach-v3"]) == ["sweep-v3", "reach-v3"]  # order kept
    assert resolve_task_list("push-wall-v3") == ["push-wall-v3"]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['sweep', 'nope-v3'\].*Did you mean 'sweep-v3'"):
        resolve_task_list(["reach-v3", "sweep", "nope-v3"])
    with pytest.raises(ValueError, match="listed more than once"):
        resolve_task_list(["reach-v3", "push-v3", "reach-v3"])
    with pytest.raises(ValueError, match="empty"):
        resolve_task_list([])
    with pytest.raises(ValueError, match="neither a preset .*mt10, mt50"):
        resolve_task_list("mt20")


def test_mt50_task_env_carries_its_global_id():
    env = make_metaworld_env("sweep-into-v3", num_envs=2, chunk_size=4, seed=3)
    check_env_specs(env)
    assert env.observation_spec["observation", "task_id"].space.n == 50
    td = env.reset()
    assert td["observation", "task_id"].squeeze(-1).tolist() == [ALL_V3_TASKS.index("sweep-into-v3")] * 2 == [48, 48]
    env.close()
    mt10 = make_metaworld_env(REACH, num_envs=1, chunk_size=None)
    assert mt10.observation_spec["observation", "task_id"].space.n == 10  # MT10 specs unchanged
    mt10.close()


def test_keys_shapes_sparse_reward_and_specs():
    env = make_metaworld_env(REACH, num_envs=2, chunk_size=4, seed=3)
    check_env_specs(env)
    td = env.reset()
    assert td["observation", "state"].shape == (2, 39)
    assert td["observation", "state"].dtype == torch.float32
    assert td["observation", "task_id"].dtype == torch.int64
    assert td["observation", "task_id"].squeeze(-1).tolist() == [0, 0]
    assert "language_instruction" not in td.keys()
    td["action"] = torch.zeros(2, 4, 4)
    nxt = env.step(td)["next"]
    assert nxt["steps_executed"].squeeze(-1).tolist() == [4, 4]
    assert nxt["reward"].dtype == torch.float32 and (nxt["reward"] == 0).all()
    assert not nxt["done"].any() and not nxt["success"].any()
    env.close()


def test_truncation_at_max_steps_bootstraps():
    env = make_metaworld_env(REACH, num_envs=1, chunk_size=4, max_steps=5, seed=1)
    td = env.reset()
    td["action"] = torch.zeros(1, 4, 4)
    td = env.step(td)
    assert td["next", "steps_executed"].item() == 4 and not td["next", "done"].item()
    td = td["next"].clone()
    td["action"] = torch.zeros(1, 4, 4)
    nxt = env.step(td)["next"]
    assert nxt["steps_executed"].item() == 1
    assert nxt["truncated"].item() and nxt["done"].item() and not nxt["terminated"].item()
    env.close()


def _expert_actions(config_index: int) -> tuple[torch.Tensor, int]:
    """Run the scripted expert step by step on one fixed configuration."""
    from metaworld.policies import ENV_POLICY_MAP

    policy = ENV_POLICY_MAP[REACH]()
    env = MetaWorldEnv(REACH, num_envs=1, mode="eval", num_eval_configs=4)
    td = env.reset(TensorDict({"config_index": torch.tensor([[config_index]])}, [1]))
    actions = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(200):
            state = td["observation", "state"][0].double().numpy()
            a = np.clip(policy.get_action(state), -1, 1).astype(np.float32)
            actions.append(torch.as_tensor(a))
            td["action"] = torch.as_tensor(a).view(1, 4)
            td = env.step(td)
            if td["next", "done"].item():
                break
            td = td["next"].clone()
    assert td["next", "success"].item(), "the scripted reach expert should succeed"
    env.close()
    return torch.stack(actions), len(actions)


def test_scripted_expert_through_chunked_env():
    actions, T = _expert_actions(config_index=1)
    h = 4
    n_chunks = -(-T // h)
    padded = torch.cat([actions, actions[-1:].expand(n_chunks * h - T, 4)])
    env = make_metaworld_env(REACH, num_envs=1, chunk_size=h, mode="eval", num_eval_configs=4)
    td = env.reset(TensorDict({"config_index": torch.tensor([[1]])}, [1]))
    executed, rewards = [], []
    for c in range(n_chunks):
        td["action"] = padded[c * h : (c + 1) * h].view(1, h, 4)
        td = env.step(td)
        executed.append(td["next", "steps_executed"].item())
        rewards.append(td["next", "reward"].item())
        if td["next", "done"].item():
            break
        td = td["next"].clone()
    assert td["next", "success"].item() and td["next", "terminated"].item()
    assert sum(executed) == T
    assert executed[-1] == T - h * (n_chunks - 1)
    assert rewards[-1] == 1.0 and sum(rewards) == 1.0
    env.close()


def test_wrong_action_shape_errors():
    base = MetaWorldEnv(REACH, num_envs=2)
    td = base.reset()
    td["action"] = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match=r"expected an action of shape \(2, 4\).*ChunkedEnv"):
        base.step(td)
    env = ChunkedEnv(base, 4)
    td = env.reset()
    td["action"] = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"expected an action chunk of shape \(2, 4, 4\)"):
        env.step(td)
    td["action"] = torch.full((2, 4, 4), float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        env.step(td)
    env.close()


def test_nan_observation_names_the_key_task_and_env():
    base = MetaWorldEnv(REACH, num_envs=3, worker_index_offset=4)
    env = ChunkedEnv(base, 4)
    td = env.reset()
    real_step = base._sims[1].raw.step

    def diverged(action):  # the physics of sub-env 1 blows up
        state, *rest = real_step(action)
        return (np.full_like(state, np.nan), *rest)

    base._sims[1].raw.step = diverged
    td["action"] = torch.zeros(3, 4, 4)
    with pytest.raises(NonFiniteObservationError) as err:
        env.step(td)  # before: a NaN state, then "received a non-finite action" one step later
    e = err.value
    assert isinstance(e, ValueError)
    assert (e.task, e.env_index, e.key) == (REACH, 5, ("observation", "state"))  # 4 + 1
    msg = str(e)
    assert "non-finite observation ('observation', 'state')" in msg and "env 5" in msg and REACH in msg
    assert "non-finite action" not in msg and "\n" not in msg
    again = pickle.loads(pickle.dumps(e))  # crosses ParallelEnv worker pipes intact
    assert (again.task, again.env_index, again.key, str(again)) == (e.task, e.env_index, e.key, msg)
    env.close()


def test_nan_action_blames_the_policy_and_names_the_env():
    base = MetaWorldEnv(REACH, num_envs=3)
    td = base.reset()
    td["action"] = torch.zeros(3, 4)
    td["action"][1, 2] = float("inf")
    with pytest.raises(NonFiniteActionError, match=r"env 1: the policy produced a non-finite action") as err:
        base.step(td)
    assert err.value.env_indices == [1] and err.value.task == REACH
    td["_step"] = torch.tensor([True, False, True])  # a masked-out row is not checked
    base.step(td)
    base.close()


def test_finished_subenv_is_not_stepped_and_refuses_steps():
    base = MetaWorldEnv(REACH, num_envs=2, max_steps=1)
    td = base.reset()
    td["action"] = torch.zeros(2, 4)
    td = base.step(td)
    assert td["next", "truncated"].all()
    td = td["next"].clone()
    td["action"] = torch.zeros(2, 4)
    with pytest.raises(RuntimeError, match="stepping a finished episode"):
        base.step(td)
    td = base.reset(TensorDict({"_reset": torch.tensor([[True], [False]])}, [2]))
    td["action"] = torch.zeros(2, 4)
    td["_step"] = torch.tensor([True, False])
    out = base.step(td)["next"]
    assert out["truncated"].squeeze(-1).tolist() == [True, True]
    base.close()


def test_training_seeds_reproducible_and_distinct():
    def goals(seed, offset=0):
        env = MetaWorldEnv(REACH, num_envs=2, seed=seed, worker_index_offset=offset)
        out = [env.reset()["observation", "state"][:, 36:39].clone() for _ in range(2)]
        env.close()
        return torch.stack(out)  # [resets, envs, 3]

    a, b = goals(7), goals(7)
    assert torch.equal(a, b)  # same seed -> same configuration sequence
    assert not torch.equal(a[0], a[1])  # fresh configuration at every reset
    assert not torch.equal(a[:, 0], a[:, 1])  # sub-envs draw distinct configurations
    assert not torch.equal(a, goals(8))
    assert not torch.equal(a[:, 1], goals(7, offset=1)[:, 1])
    # seed 0 is a real seed (MetaWorld's custom-mt-envs treats it as "unseeded")
    assert torch.equal(goals(0), goals(0))


def test_eval_configs_fixed_and_prefix_stable():
    np.random.seed(123)  # global numpy state must not matter
    c8 = _rand_vecs(make_task_configs(REACH, 8, EVAL_SEED))
    np.random.seed(456)
    c8b = _rand_vecs(make_task_configs(REACH, 8, EVAL_SEED))
    c4 = _rand_vecs(make_eval_configs(REACH, 4))
    assert np.array_equal(c8, c8b)
    assert np.array_equal(c8[:4], c4)  # quick eval = first N of the fixed list
    assert len(np.unique(c8, axis=0)) == 8
    other = _rand_vecs(make_task_configs(REACH, 4, EVAL_SEED + 1))
    assert not np.array_equal(other, c4)


def test_eval_reset_independent_of_batch_position():
    cfg = torch.tensor([[3], [0], [2]])
    a = MetaWorldEnv(REACH, num_envs=3, mode="eval", num_eval_configs=4)
    b = MetaWorldEnv(REACH, num_envs=1, mode="eval", num_eval_configs=4, seed=99)
    sa = a.reset(TensorDict({"config_index": cfg}, [3]))["observation", "state"]
    for row, i in enumerate([3, 0, 2]):
        sb = b.reset(TensorDict({"config_index": torch.tensor([[i]])}, [1]))["observation", "state"]
        assert torch.equal(sa[row], sb[0])
    assert not torch.equal(sa[0], sa[1])
    with pytest.raises(ValueError, match="mode='eval'"):
        MetaWorldEnv(REACH, num_envs=1).reset(TensorDict({"config_index": torch.tensor([[0]])}, [1]))
    a.close()
    b.close()


def test_instruction_entry_optional():
    env = make_metaworld_env(REACH, num_envs=2, include_instruction=True)
    td = env.reset()
    assert td["language_instruction"] == TASK_INSTRUCTIONS[REACH]
    assert "language_instruction" in env.observation_spec.keys()
    env.close()


@requires_gl
def test_pixel_frame():
    env = make_metaworld_env(REACH, num_envs=2, chunk_size=2, from_pixels=True, image_size=128)
    td = env.reset()
    img = td["observation", "image"]
    assert img.shape == (2, 128, 128, 3) and img.dtype == torch.uint8
    assert img.float().std() > 10  # not a blank frame
    assert img[0].float().mean(dim=(0, 1)).std() > 0  # not grey: colour channels differ
    td["action"] = torch.zeros(2, 2, 4)
    td["action"][..., 2] = 1.0  # move the hand up
    nxt = env.step(td)["next"]
    assert nxt["observation", "image"].shape == (2, 128, 128, 3)
    assert not torch.equal(nxt["observation", "image"][0], img[0])  # the scene changed
    env.close()


def test_reused_parsed_models_simulate_exactly_like_parsed_ones(monkeypatch):
    """TaskSim builds MetaWorld from a copy of a model parsed once per process: each env owns
    its model, and an episode is bit for bit the one of an env that parsed its XML itself."""
    import contextlib

    import mujoco
    import numpy as np

    from torchrl_chunk.envs.metaworld import simulator
    from torchrl_chunk.envs.metaworld.simulator import TaskSim

    def episode(sim):
        sim.seed(3)
        obs = [sim.reset_fresh()]
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs.append(sim.step(rng.uniform(-1, 1, 4).astype(np.float32))[0])
        return np.stack(obs)

    parse, calls = mujoco.MjModel.from_xml_path, []
    simulator._parsed_model.cache_clear()
    monkeypatch.setattr(mujoco.MjModel, "from_xml_path", lambda path, *a, **k: calls.append(path) or parse(path, *a, **k))
    reused = [TaskSim("peg-insert-side-v3", max_steps=200, image_size=None)]  # parses (and caches)
    calls.clear()
    reused += [TaskSim("peg-insert-side-v3", max_steps=200, image_size=None) for _ in range(2)]
    assert not calls and reused[1].raw.model is not reused[2].raw.model  # copies, each env its own
    with monkeypatch.context() as m:
        m.setattr(simulator, "parsed_models_reused", contextlib.nullcontext)
        parsed = TaskSim("peg-insert-side-v3", max_steps=200, image_size=None)  # parses its XML itself
    assert len(calls) == 1
    want = episode(parsed)
    for sim in reused:
        np.testing.assert_array_equal(episode(sim), want)


@requires_gl
def test_pixel_chunk_renders_once_with_the_frames_of_every_step(monkeypatch):
    """ChunkedEnv over MetaWorldEnv renders the camera once per chunk (after the chunk, for
    the envs that moved), and the frames equal those of rendering after every env step,
    also for envs whose episode ends inside a chunk (max_steps=6 with h=4)."""
    from torchrl_chunk.envs.metaworld.simulator import TaskSim

    renders = []
    render = TaskSim.render
    monkeypatch.setattr(TaskSim, "render", lambda self: renders.append(1) or render(self))

    def rollout(defer: bool):
        env = make_metaworld_env(REACH, num_envs=3, chunk_size=4, from_pixels=True, image_size=32, seed=3,
                                 max_steps=6)
        if not defer:
            env.base_env.defer_observations = None  # the reference: a render after every env step
        renders.clear()
        torch.manual_seed(0)
        td = env.rollout(6, break_when_any_done=False)  # resets after each 6-step episode
        env.close()
        return td, len(renders)

    deferred, n_deferred = rollout(True)
    every_step, n_every = rollout(False)
    assert (deferred == every_step).all()  # frames, states, rewards, dones: all equal
    # per 6-step episode and env: 1 reset frame + 6 step renders, or 1 + 2 (one per chunk)
    assert (n_every, n_deferred) == (3 * 3 * (1 + 6), 3 * 3 * (1 + 2))


def test_fast_touching_object_equals_metaworlds_on_grasps():
    """TaskSim binds a faster ``touching_object`` to its MetaWorld env (the grasp check of the
    dense reward): the same answer as MetaWorld's own on every step of scripted pick-and-place
    episodes (which grasp) and of peg-insert-side (another main object)."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv

    from torchrl_chunk.envs.demos import scripted_policy
    from torchrl_chunk.envs.metaworld import TaskSim

    for task, geom in (("pick-place-v3", "objGeom"), ("peg-insert-side-v3", "peg")):
        sim = TaskSim(task, max_steps=200, image_size=None)
        sim.seed(0)
        policy = scripted_policy(task)
        assert sim.raw.touching_object.func is not SawyerXYZEnv.touching_object  # the fast one is bound
        steps = touching = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MetaWorld's "Constant(s) may be too high"
            for _ in range(2):
                obs = sim.reset_fresh()
                while not sim.done:
                    obs, _, _ = sim.step(np.clip(policy(obs), -1, 1).astype(np.float32))
                    gid = sim.raw.data.geom(geom).id
                    fast = sim.raw.touching_object(gid)
                    assert fast == SawyerXYZEnv.touching_object(sim.raw, gid)
                    steps, touching = steps + 1, touching + fast
        assert touching >= 10 and steps - touching >= 10, (task, steps, touching)  # both answers seen
