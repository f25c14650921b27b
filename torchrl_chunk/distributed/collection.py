"""Remote collection: env workers as Ray actors through TorchRL's ``RayCollector``.

The learner (CPU or GPU) keeps the policy, the demo buffer and the checkpoints; each of
``num_workers`` Ray actors holds ``num_envs / num_workers`` envs (a batched, chunked
MetaWorld env built by ``make_env``) and a CPU copy of the policy. Per batch:

    learner --weights (RayWeightSyncScheme, once per worker)--> actors
    actors  --set_seed(s), reset, one whole-episode batch [n, T] each--> learner
    learner  stacks them to [num_envs, T], in the order of one local env of num_envs

Why a wrapper around ``RayCollector`` (hand-written, ~150 lines): the method needs three
things TorchRL's class leaves to its caller.

1. **One reproducible batch per call.** Worker ``k``'s envs are seeded as sub-envs
   ``k * n ..`` of one env (``worker_index_offset``), and its exploration noise comes from
   ``torch.manual_seed(derive_seed(s, k, EXPLORATION_STREAM))`` (:class:`SeededCollector`),
   so a batch depends only on (seed, weights, worker count) on a given kind of CPU: a
   resumed run, a restarted actor and a second run collect the same data.
2. **A dead actor costs one rebuild, not the run.** A lost node, an out-of-memory kill or
   ``ray.kill`` ends the batch with a ``RayActorError``; the collector is rebuilt (new
   actors, weights pushed again) and the same batch is collected again -- by point 1
   it is the batch the dead actor would have returned. An exception raised *in* the env
   or policy (a NaN observation, say) is not retried: it is re-raised as itself.
3. **The layout of a local collector.** ``RayCollector`` (``sync=True``) stacks the
   workers' batches into ``[W, n, T]``; this returns ``[W * n, T]``.

With ``timeout_s``, a batch that takes too long (no free CPUs for the actors, or actors
starved of CPU) raises ``TimeoutError`` instead of waiting for ever.

Not equal to a local ``Collector`` of the same seed, bit for bit: there the learner's
RNG draws the noise and the policy runs on the whole batch at once, here on ``n`` envs
per actor. A matmul's float sums may depend on the batch size (MKL's kernels on AMD x86
do: a row of a batch of 4 and the same row in a batch of 2 differ in the last bits). The
env side is equal: with a policy that is batch-invariant by construction (elementwise
ops only) the two give the same batches (``tests/distributed/test_collection.py``).
"""

from __future__ import annotations

import copy
import functools
import threading
import time
import warnings
from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType

from torchrl_chunk.distributed.runtime import require_ray
from torchrl_chunk.seeding import EXPLORATION_STREAM, derive_seed

__all__ = ["RayEpisodeCollector", "SeededCollector", "is_worker_failure"]


class SeededCollector(Collector):
    """TorchRL's ``Collector`` whose ``set_seed`` also seeds this process's torch RNG.

    Used as the ``collector_class`` of the Ray actors: the exploration noise of worker
    ``worker_idx`` after ``set_seed(s)`` is drawn from
    ``derive_seed(s, worker_idx, EXPLORATION_STREAM)``. ``num_threads`` fixes torch's
    intra-op threads in the actor (the float sums, hence the batch, depend on it).
    """

    def __init__(self, *args, worker_idx: int | None = None, num_threads: int = 1, **kwargs) -> None:
        torch.set_num_threads(int(num_threads))
        super().__init__(*args, worker_idx=worker_idx, **kwargs)

    def set_seed(self, seed: int, static_seed: bool = False) -> int:
        torch.manual_seed(derive_seed(seed, int(self.worker_idx or 0), EXPLORATION_STREAM))
        return super().set_seed(seed, static_seed=static_seed)

    def __repr__(self) -> str:  # Ray prefixes every log line of the actor with it
        return f"{type(self).__name__}(worker={self.worker_idx})"

    def __bool__(self) -> bool:
        # Ray tests ``if actor:`` when it stores an exception raised in a method; without this,
        # Python falls back on ``Collector.__len__``, which is a float (inf) for an endless
        # collector: Ray's error path then dies with "TypeError: 'float' object cannot be
        # interpreted as an integer" and the actor is lost instead of the error reported.
        return True


def is_worker_failure(err: BaseException) -> bool:
    """``err`` says a Ray worker or node was lost (retry), not that our code raised."""
    try:
        from ray import exceptions as rex
    except ImportError:
        return False
    lost = tuple(
        getattr(rex, name)
        for name in ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
                     "OwnerDiedError", "ActorUnavailableError")
        if hasattr(rex, name)
    )
    return isinstance(err, lost) and not isinstance(err, rex.RayTaskError)


def task_error_cause(err: BaseException) -> BaseException:
    """The exception raised inside a Ray task or actor, without Ray's wrapping."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


class RayEpisodeCollector:
    """Whole-episode batches from ``num_workers`` Ray actors; ``collect(seed)`` returns one.

    Args:
        make_env: picklable ``make_env(*, num_envs, worker_index_offset) -> EnvBase``, e.g.
            ``functools.partial(make_metaworld_env, "push-v3", chunk_size=4, seed=s)``;
            it runs in the actors.
        policy: the learner's policy module; a CPU copy is sent to each actor once, then
            only its weights (:meth:`collect` pushes the current ones).

    Keyword Args:
        num_envs: envs in all; must be a multiple of ``num_workers``.
        num_workers: Ray actors (each ``num_envs / num_workers`` envs, 1 CPU).
        decisions_per_env: policy decisions per env per batch (``T``).
        exploration_type: TorchRL exploration type of the actors' policy.
        max_restarts: rebuilds after lost actors before giving up (per collector).
        num_threads: torch intra-op threads in each actor.
        timeout_s: seconds one :meth:`collect` may take, the start of the actors included,
            before it raises ``TimeoutError`` (its actors are stopped: the next call starts
            new ones). ``None`` (default) waits for ever, e.g. for CPUs that another job of
            the cluster holds. Ray starts its workers niced: on a loaded machine they may
            get little CPU, and a bounded wait fails instead of hanging.
        remote_config: ``ray.remote`` options of each actor (default: 1 CPU).
        collector_kwargs: extra ``Collector`` arguments.
    """

    def __init__(
        self,
        make_env: Callable[..., EnvBase],
        policy: torch.nn.Module,
        *,
        num_envs: int,
        num_workers: int,
        decisions_per_env: int,
        exploration_type: ExplorationType = ExplorationType.RANDOM,
        max_restarts: int = 3,
        num_threads: int = 1,
        remote_config: dict | None = None,
        collector_kwargs: dict | None = None,
        timeout_s: float | None = None,
    ) -> None:
        require_ray()
        if num_workers < 1 or num_envs % num_workers:
            raise ValueError(
                f"num_envs={num_envs} must be a positive multiple of num_workers={num_workers} "
                "(each Ray collector holds num_envs / num_workers envs)."
            )
        self.make_env = make_env
        self.policy = policy
        self.num_envs, self.num_workers = int(num_envs), int(num_workers)
        self.decisions_per_env = int(decisions_per_env)
        self.exploration_type = exploration_type
        self.max_restarts = int(max_restarts)
        self.num_threads = int(num_threads)
        self.remote_config = {"num_cpus": 1, **(remote_config or {})}
        self.collector_kwargs = dict(collector_kwargs or {})
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}.")
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.restarts = 0
        #: bytes of the last batch's weights push (all workers) and of the batch received
        self.bytes_sent = 0
        self.bytes_received = 0
        self._collector = None
        self._batches = None
        self._placement = None
        self._deadline = self._expired = None  # of the collect() under way, with timeout_s

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        from torchrl.collectors.distributed import RayCollector

        ray = require_ray()
        # All the actors' CPUs are reserved at once (a placement group): collectors of several
        # jobs sharing a cluster never each hold part of what they need and wait for ever.
        bundle = {"CPU": float(self.remote_config["num_cpus"])}
        self._placement = placement_group([bundle] * self.num_workers, strategy="PACK")
        if self._expired is not None and self._expired.is_set():  # the watchdog came before it
            raise ray.exceptions.GetTimeoutError("timeout_s ran out before the actors were placed")
        wait = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        ray.get(self._placement.ready(), timeout=wait)  # GetTimeoutError: see collect()
        remote_config = {**self.remote_config,
                         "scheduling_strategy": PlacementGroupSchedulingStrategy(self._placement)}
        per = self.num_envs // self.num_workers
        makers = [functools.partial(self.make_env, num_envs=per, worker_index_offset=k * per)
                  for k in range(self.num_workers)]
        cpu_policy = copy.deepcopy(self.policy).to("cpu")
        kwargs = {"num_threads": self.num_threads, "auto_register_policy_transforms": False,
                  **self.collector_kwargs}
        self._collector = RayCollector(
            makers, cpu_policy, collector_class=SeededCollector, collector_kwargs=kwargs,
            frames_per_batch=self.num_envs * self.decisions_per_env,
            total_frames=2**62,  # endless: RayCollector stops at once on total_frames=-1
            sync=True, exploration_type=self.exploration_type, remote_configs=remote_config,
            device="cpu", storing_device="cpu", env_device="cpu", policy_device="cpu",
        )
        self._batches = iter(self._collector)

    def _weights(self) -> TensorDictBase:
        return TensorDict.from_module(self.policy).data.to("cpu")

    # ------------------------------------------------------------------ collecting
    def collect(self, seed: int) -> TensorDictBase:
        """Push the current weights, reseed and reset every worker, return ``[num_envs, T]``."""
        if self.timeout_s is None:
            return self._collect(seed)
        self._deadline, self._expired = time.monotonic() + self.timeout_s, threading.Event()
        # Ray's waits inside RayCollector have no timeout: when time is up, the watchdog
        # removes the placement group, which stops its actors, and those waits return.
        watchdog = threading.Timer(self.timeout_s, self._expire, args=(self._expired,))
        watchdog.daemon = True
        watchdog.start()
        try:
            data = self._collect(seed)
            watchdog.cancel()
            if self._expired.is_set():  # time ran out just after the batch came: the actors are gone
                self._discard()
            return data
        finally:
            watchdog.cancel()
            self._deadline = self._expired = None

    def _collect(self, seed: int) -> TensorDictBase:
        ray = require_ray()
        weights = self._weights()
        for attempt in range(self.max_restarts + 1):
            try:
                if self._collector is None:
                    self._build()
                self._collector.update_policy_weights_(weights)
                self._collector.set_seed(int(seed), static_seed=True)  # same seed, per-worker offsets
                self._collector.map_fn("reset")
                data = next(self._batches)
            except ray.exceptions.RayTaskError as err:  # raised by the env or the policy
                self._discard()  # its iterator is finished: a later collect() starts afresh
                if self._timed_out(err):
                    raise self._timeout_error() from err
                raise task_error_cause(err) from None
            except Exception as err:  # noqa: BLE001 - only lost workers are retried
                if self._timed_out(err):  # not a lost worker: the watchdog stopped them
                    self._discard()
                    raise self._timeout_error() from err
                # A lost actor surfaces as a Ray error, or as a broken weight-sync
                # connection (gloo: "Connection closed by peer"): ask the actors.
                lost = is_worker_failure(err) or bool(self._lost_workers())
                if not lost:
                    raise
                if attempt == self.max_restarts:
                    raise RuntimeError(
                        f"remote collection lost a Ray worker {attempt + 1} times in a row "
                        f"({type(err).__name__}); check the cluster's nodes and memory."
                    ) from err
                warnings.warn(
                    f"a Ray collector worker was lost ({type(err).__name__}); rebuilding the "
                    f"collector and collecting the same batch again ({attempt + 1}/{self.max_restarts}).",
                    stacklevel=3,
                )
                self.restarts += 1
                self._discard()
                continue
            self.bytes_sent = weights.bytes() * self.num_workers
            self.bytes_received = data.bytes()
            return data.reshape(self.num_envs, -1)
        raise AssertionError("unreachable")

    def _timed_out(self, err: BaseException) -> bool:
        """``err`` comes from running out of ``timeout_s`` (the watchdog, or a bounded wait)."""
        from ray.exceptions import GetTimeoutError

        if self._expired is None:
            return False
        return self._expired.is_set() or isinstance(err, GetTimeoutError)

    def _expire(self, expired: threading.Event) -> None:
        """The watchdog of :meth:`collect` (another thread): stop the actors."""
        expired.set()
        placement = self._placement
        if placement is not None:
            from ray.util.placement_group import remove_placement_group

            try:
                remove_placement_group(placement)
            except Exception:  # noqa: BLE001 - removed already, or the cluster is gone
                pass

    def _timeout_error(self) -> TimeoutError:
        return TimeoutError(
            f"remote collection did not finish within timeout_s={self.timeout_s:g} s "
            f"({self.num_workers} Ray actors of {self.remote_config['num_cpus']:g} CPU each, "
            f"{self.num_envs // self.num_workers} envs x {self.decisions_per_env} decisions): the cluster "
            "may lack free CPUs (another job holds them), or its workers may be starved of CPU on a "
            "loaded machine (Ray starts them niced). The actors were stopped; the next collect() "
            "starts new ones. Raise timeout_s, or free CPUs."
        )

    def actors(self) -> list:
        """The live Ray actors (empty before the first batch): idle between two batches, they
        can run other work, e.g. ``evaluate_policy_ray(..., actors=collector.actors())``."""
        return [] if self._collector is None else list(self._collector.remote_collectors)

    def worker_pids(self) -> list[int]:
        """Process ids of the actors (tests kill one to check the restart)."""
        ray = require_ray()
        if self._collector is None:
            self._build()
        return ray.get([c.__ray_call__.remote(_pid) for c in self._collector.remote_collectors],
                       timeout=self.timeout_s)

    def _lost_workers(self) -> list[int]:
        """Indices of the actors that no longer answer (empty when all are alive)."""
        ray = require_ray()
        if self._collector is None:
            return []
        pings = [actor.__ray_call__.remote(_pid) for actor in self._collector.remote_collectors]
        ready, _ = ray.wait(pings, num_returns=len(pings), timeout=30)
        lost = []
        for k, ping in enumerate(pings):
            try:
                if ping not in ready:
                    raise TimeoutError
                ray.get(ping)
            except Exception:  # noqa: BLE001 - dead, unreachable or hung: all count as lost
                lost.append(k)
        return lost

    def _discard(self) -> None:
        collector, self._collector, self._batches = self._collector, None, None
        placement, self._placement = self._placement, None
        if collector is not None:
            try:
                collector.shutdown()
            except Exception:  # noqa: BLE001 - the actors may be gone already
                pass
        if placement is not None:
            from ray.util.placement_group import remove_placement_group

            try:
                remove_placement_group(placement)
            except Exception:  # noqa: BLE001 - the cluster may be gone already
                pass

    def shutdown(self) -> None:
        self._discard()


def _pid(_actor) -> int:
    import os

    return os.getpid()
