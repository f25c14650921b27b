"""Remote evaluation: the fixed evaluation configurations split over Ray tasks.

Exactly the per-episode results of :func:`torchrl_chunk.evaluation.evaluate_policy`, not
only the same statistics: an episode's outcome depends on its configuration and on the
batch it runs in (the policy's float sums depend on the batch), so the configurations are
split into whole *waves* -- the ``num_envs`` episodes one local evaluation runs together
-- dealt round-robin to ``num_workers`` Ray tasks (:func:`wave_shards`). Each task runs its
waves with an env of the local batch size and the learner's thread count, and the parts
are merged by episode index. Tasks whose worker dies are retried by Ray (evaluation has
no state), up to ``max_retries``. (Exactly equal where the workers' CPUs are of the kind of
the learner's: another CPU may run the same matmul with another kernel.) With
``timeout_s``, an evaluation that takes too long raises ``TimeoutError`` instead of
waiting for ever.

Given ``actors`` (e.g. :meth:`RayEpisodeCollector.actors`, idle between two batches), the
shards run on them instead of new tasks: no process start-up, and no deadlock when the
collectors hold every CPU of the cluster (an actor keeps its CPU while it lives, so
tasks asking for one would wait for ever). If an actor is lost meanwhile, the evaluation
runs again as tasks.

Why not TorchRL's ``RayEvalWorker``: it runs one rollout of a policy and reports its mean
reward; the paper's protocol needs per-episode success and length on given fixed
configurations, which :func:`~torchrl_chunk.evaluation.runner.run_episodes` computes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import torch

from torchrl_chunk.distributed.collection import is_worker_failure, task_error_cause
from torchrl_chunk.distributed.runtime import require_ray
from torchrl_chunk.envs.metaworld import EVAL_SEED, NUM_EVAL_CONFIGS, make_metaworld_env, task_name
from torchrl_chunk.evaluation.runner import EpisodeResults, merge_episodes, run_episodes

__all__ = ["evaluate_policy_ray", "wave_shards"]


def wave_shards(indices: Sequence[int], num_envs: int, num_shards: int) -> list[np.ndarray]:
    """Split ``indices`` into waves of ``num_envs`` and deal the waves to ``num_shards`` shards.

    Every shard is a concatenation of whole waves of the unsplit list, so running a
    shard in waves of ``num_envs`` reproduces exactly the waves of one local run.
    """
    if num_envs < 1 or num_shards < 1:
        raise ValueError(f"num_envs and num_shards must be >= 1, got {num_envs} and {num_shards}.")
    idx = np.asarray(list(indices), dtype=np.int64)
    waves = [idx[i : i + num_envs] for i in range(0, idx.size, num_envs)]
    n = min(num_shards, len(waves))
    return [np.concatenate(waves[k::n]) for k in range(n)]


def _run_shard(policy, task, indices, batch, env_kwargs, num_threads, record_episodes) -> EpisodeResults:
    threads = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))  # the local evaluation's: the same float sums
    env = make_metaworld_env(task, num_envs=batch, mode="eval", **env_kwargs)
    try:
        return run_episodes(policy, task, indices, env=env, max_steps=env_kwargs["max_steps"],
                            record_episodes=record_episodes)
    finally:
        env.close()
        torch.set_num_threads(threads)  # a collector actor's own setting is left as it was


def _run_shard_on_actor(_actor, *args) -> EpisodeResults:  # through actor.__ray_call__
    return _run_shard(*args)


def evaluate_policy_ray(
    policy: torch.nn.Module,
    task: str | int,
    *,
    num_workers: int,
    num_episodes: int = NUM_EVAL_CONFIGS,
    num_envs: int = 16,
    chunk_size: int = 4,
    max_steps: int = 200,
    eval_seed: int = EVAL_SEED,
    from_pixels: bool = False,
    image_size: int = 128,
    record_episodes: int = 0,
    return_episodes: bool = False,
    num_threads: int | None = None,
    max_retries: int = 3,
    actors: Sequence | None = None,
    timeout_s: float | None = None,
) -> dict:
    """:func:`~torchrl_chunk.evaluation.evaluate_policy` with the episodes on Ray workers.

    Takes the same keyword arguments (the first ``num_episodes`` fixed configurations)
    plus ``num_workers`` (Ray tasks of ``num_threads`` CPUs each), ``num_threads`` (torch threads in each
    task; default: this process's, as the local evaluation uses), ``max_retries`` and
    ``actors`` (Ray actors to run the shards on, round-robin, instead of new tasks) and
    ``timeout_s`` (seconds to wait for all shards, then ``TimeoutError``; ``None``: for ever).
    ``policy`` is sent once through Ray's object store, on CPU. Returns the same dict.
    """
    ray = require_ray()
    if not 1 <= num_episodes <= NUM_EVAL_CONFIGS:
        raise ValueError(f"num_episodes must be in [1, {NUM_EVAL_CONFIGS}], got {num_episodes}.")
    name = task_name(task)
    threads = torch.get_num_threads() if num_threads is None else int(num_threads)
    batch = min(int(num_envs), int(num_episodes))  # the local evaluation's env batch
    env_kwargs = dict(chunk_size=chunk_size, max_steps=max_steps, num_eval_configs=num_episodes,
                      eval_seed=eval_seed, from_pixels=from_pixels, image_size=image_size)
    policy_ref = ray.put(copy.deepcopy(policy).to("cpu"))
    shards = wave_shards(range(num_episodes), batch, num_workers)
    args = [(policy_ref, name, shard, batch, env_kwargs, threads, record_episodes) for shard in shards]
    deadline = None if timeout_s is None else time.monotonic() + float(timeout_s)

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    refs, on_actors = [], bool(actors)
    try:
        parts = None
        if actors:
            try:
                refs = [actors[k % len(actors)].__ray_call__.remote(_run_shard_on_actor, *a)
                        for k, a in enumerate(args)]
                parts = ray.get(refs, timeout=left())
            except Exception as err:  # noqa: BLE001 - a lost actor: run the shards as tasks
                if not is_worker_failure(err):  # incl. a RayTaskError: raised below as itself
                    raise
        if parts is None:
            remote = ray.remote(num_cpus=threads, max_retries=int(max_retries))(_run_shard)
            refs, on_actors = [remote.remote(*a) for a in args], False
            parts = ray.get(refs, timeout=left())
    except ray.exceptions.RayTaskError as err:  # raised by the env or the policy: as itself
        raise task_error_cause(err) from None
    except ray.exceptions.GetTimeoutError as err:
        for ref in refs:  # tasks are stopped; a shard already running on an actor runs to its end
            try:
                ray.cancel(ref, force=not on_actors)
            except Exception:  # noqa: BLE001 - finished or gone meanwhile
                pass
        raise TimeoutError(
            f"remote evaluation of {name} ({num_episodes} episodes in {len(shards)} Ray "
            f"{'actor calls' if on_actors else 'tasks'} of {threads} CPU(s)) did not finish within "
            f"timeout_s={timeout_s:g} s: the cluster may lack free CPUs (collector actors hold theirs "
            "while they live: pass actors=), or its workers may be starved of CPU on a loaded machine "
            "(Ray starts them niced). Raise timeout_s, or free CPUs."
        ) from err
    episodes = merge_episodes(parts)
    out: dict = {"task": name, **episodes.metrics()}
    if return_episodes or record_episodes:
        out["episodes"] = episodes
    return out
