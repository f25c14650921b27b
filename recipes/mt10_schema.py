"""The recipe's settings, typed and closed: one dataclass per section of ``recipes/conf/``.

``settings_problems(cfg)`` checks the composed settings against :class:`Settings` (and the
model's own dataclass, picked by ``model.name``): a key that is not a setting, a setting
that is missing, and a value of the wrong type are each named in one line, all at once,
before anything is written. ``mt10_config.check_config`` runs it first; the ranges, choices
and combinations it checks next assume the types checked here.

How, and why not Hydra's ConfigStore as the base of ``config.yaml``'s defaults list:

* **Strict, never converted.** OmegaConf 2.3 (Hydra 1.3) converts a value to its field's
  type instead of refusing it: ``yes``/``on``/``1`` become ``true``, an int becomes a float
  (``ray.job_gpus: 0`` would be saved as ``0.0``), any scalar becomes a string. Here a bool
  is only ``true``/``false``, an int is an int, a number is an int or a float as given, and
  a string is a string: the resolved settings (the run's ``config.yaml``, which continuing
  and resuming compare) are exactly those composed, the same as before the types were
  declared (``tests/recipes/fixtures/preset_*.yaml``). On the command line Hydra reads only
  ``true``/``false`` as booleans, so ``env.from_pixels=yes`` or ``=maybe`` is a string and
  refused; in a YAML file ``yes``/``no``/``on``/``off`` are YAML 1.1 booleans already.
* **Unions.** OmegaConf 2.3 has no unions of primitive types; ``ppo.clip_value`` (a bool or a
  number), ``env.num_workers`` (``auto`` or an int) and ``buffer.length_limit`` (null, an int
  or ``adaptive``) would have to be ``Any``, unchecked. Here they are unions.
* **Every way settings arrive.** Hydra adds ``+key=value`` even to a struct config, and a
  YAML given with ``--config-path``/``--config-name`` need not list a schema in its
  defaults; checking the composed result covers the command line, the presets, such a YAML
  and a resumed run's ``config.yaml`` alike. (Hydra's struct mode still refuses
  ``key=value`` for a key that does not exist, in its own message.)
* **One line.** Hydra reports a composition error itself, from inside ``hydra.main``, over
  several lines and one error at a time; here the recipe words every problem in its
  ``error: ... Fix these settings and run again.`` line.

Limits: the schema checks types and keys, not values (``mt10_config`` does); ``tasks`` and
``seeds`` are ``Any`` here because ``mt10_config`` words their errors (closest task names,
distinct seeds); a model whose ``model.name`` is unknown is not checked here (the choice
check names it). A new setting needs its field here as well as its line in ``config.yaml``
(``tests/recipes/test_mt10_config.py::test_presets_pass`` names a setting that lacks one).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

#: Field metadata: the key may be absent (declared by a preset that needs it, not in config.yaml).
MAY_BE_ABSENT = {"may_be_absent": True}


def _expects(text: str) -> dict:
    """Field metadata: what a type error says the value must be, for unions of a type and keywords."""
    return {"expects": text}


@dataclass
class EnvSettings:
    horizon: int
    num_envs: int
    num_workers: Union[int, str] = field(metadata=_expects("auto or an integer (worker processes)"))
    max_steps: int
    worker_timeout_s: float
    decisions_per_env: Optional[int]
    from_pixels: bool
    image_size: int


@dataclass
class CollectorSettings:
    backend: str
    workers: int


@dataclass
class RaySettings:
    address: Optional[str]
    num_cpus: Optional[int]
    max_retries: int
    job_gpus: float
    collector_restarts: int


@dataclass
class DemoSettings:
    num: int
    seed: Optional[int]
    cache_dir: str
    source: str
    path: Optional[str]
    assume_success: bool
    state_key: str
    image_key: Optional[str]


@dataclass
class PPOSettings:
    clip_epsilon: float
    clip_value: Optional[Union[bool, float]] = field(metadata=_expects(
        "true (clip the value loss at ppo.clip_epsilon), a number > 0 (clip it there), false or null (no clipping)"))
    gamma: float
    lmbda: float
    discount: str
    critic_coeff: float
    entropy_coeff: float
    normalize_advantage: bool
    epochs: int
    minibatch_size: int


@dataclass
class BCSettings:
    loss_form: str
    coeff: float
    decay_floor: Optional[float]
    batch_size: int
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_lr: Optional[float]


@dataclass
class AdaptiveLimitSettings:
    quantile: float
    window: int
    min_successes: int


@dataclass
class BufferSettings:
    mode: str
    length_limit: Optional[Union[int, str]] = field(metadata=_expects(
        "null (the longest expert demo), an integer (env steps) or adaptive"))
    adaptive: AdaptiveLimitSettings
    length_weighting: float
    max_size: int
    storage: str


@dataclass
class ScheduleSettings:
    kind: str
    warmup_steps: float
    constant: float
    unit: str
    scale_critic: bool


@dataclass
class OptimSettings:
    name: str
    lr: float
    critic_lr: Optional[float]
    weight_decay: float
    max_grad_norm: float


@dataclass
class TrainSettings:
    total_env_steps: int
    eval_every_env_steps: int
    quick_eval_episodes: int
    checkpoint_every_iters: int


@dataclass
class EvalSettings:
    episodes: int
    eval_seed: int
    num_envs: int
    backend: str
    workers: int
    video_episodes: int


@dataclass
class LoggerSettings:
    backend: str


@dataclass
class AlgorithmSpec:
    """One entry of ``algorithms`` (what an algorithm name means)."""

    ppo: bool
    bc: bool
    num_demos: int
    buffer_mode: str
    horizon: int
    schedule: str
    label: str


@dataclass
class AlgoSelection:
    """The ``algo`` group: the algorithm names to run."""

    names: List[str]


# ---- the model group: one dataclass per conf/model/<name>.yaml, picked by model.name ----
@dataclass(kw_only=True)
class ModelSettings:
    name: str
    needs_pixels: bool
    log_std_init: float
    buffer_max_size: int
    precision: str
    # A model with a fixed chunk length may declare it; check_config compares it with env.horizon.
    horizon: Optional[int] = field(default=None, metadata=MAY_BE_ABSENT)


@dataclass(kw_only=True)
class MLPModel(ModelSettings):
    hidden: List[int]
    task_embed_dim: int
    separate_critic: bool


@dataclass(kw_only=True)
class PixelModel(ModelSettings):
    channels: int
    embed_dim: int
    separate_critic: bool


@dataclass(kw_only=True)
class OctoSmallModel(ModelSettings):
    size: str
    checkpoint: Optional[str]
    instructions: Optional[str]
    t5_path: Optional[str]
    window_size: int
    separate_critic: bool


@dataclass(kw_only=True)
class TinyVLAModel(ModelSettings):
    hidden_dim: int
    text_dim: int
    use_state: bool
    normalize_state: bool


#: ``model.name`` -> its settings (recipes/conf/model/<name>.yaml).
MODELS: dict[str, type] = {"mlp": MLPModel, "pixel": PixelModel, "octo_small": OctoSmallModel,
                           "tiny_vla": TinyVLAModel}


@dataclass
class Settings:
    """``recipes/conf/config.yaml`` with its groups composed (``algo``, ``model``, ``preset``)."""

    tasks: Any  # mt10 | mt50 | all | a name | a list of names: checked (with the closest names) by check_config
    seed: int
    seeds: Any  # null or a list of distinct ints: checked by check_config
    device: str
    run_dir: Optional[str]
    resume: Optional[str]
    parallel_tasks: int
    launcher: str
    threads_per_process: int
    env: EnvSettings
    collector: CollectorSettings
    ray: RaySettings
    demos: DemoSettings
    ppo: PPOSettings
    bc: BCSettings
    buffer: BufferSettings
    schedule: ScheduleSettings
    optim: OptimSettings
    train: TrainSettings
    eval: EvalSettings
    logger: LoggerSettings
    algorithms: Dict[str, AlgorithmSpec]
    algo: AlgoSelection
    model: Any  # MODELS[model.name]


# ----------------------------------------------------------------------------------------
# the check
# ----------------------------------------------------------------------------------------
def settings_problems(cfg: DictConfig | Mapping, allow: Iterable[str] = ()) -> list[str]:
    """Every key that is not a setting, every missing setting and every value of the wrong type.

    ``allow``: dotted keys tolerated although not settings (a resumed run's ``config.yaml``
    written by an older recipe). Each problem is one line naming the key.
    """
    if isinstance(cfg, DictConfig):
        try:
            data = OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as err:  # e.g. ${model.needs_pixels} with no such key
            key = getattr(err, "full_key", None) or "settings"
            return [f"{key} cannot be resolved: {str(err).splitlines()[0]}"]
    else:
        data = dict(cfg)
    check = _Check(frozenset(allow))
    check.section(data, Settings, "", "recipes/conf/config.yaml", "the settings")
    model = data.get("model")
    if isinstance(model, Mapping):
        name = model.get("name")
        if name in MODELS:  # an unknown name: check_config names the choices
            check.section(model, MODELS[name], "model.", f"recipes/conf/model/{name}.yaml", f"model={name}")
    elif "model" in data:
        check.problems.append(f"model must be a group of settings (model={'|'.join(MODELS)}), got {model!r}")
    return check.problems


class _Check:
    def __init__(self, allow: frozenset):
        self.allow, self.problems = allow, []

    def section(self, values: Mapping, schema: type, prefix: str, source: str, label: str) -> None:
        hints = get_type_hints(schema)
        known = {f.name: f for f in fields(schema)}
        for key in values:
            name = f"{prefix}{key}"
            if key not in known and not self._allowed(name):
                self.problems.append(_unknown(name, str(key), list(known), prefix, label))
        for key, f in known.items():
            name = f"{prefix}{key}"
            if key in values:
                self.value(name, values[key], hints[key], source, f.metadata.get("expects"))
            elif not f.metadata.get("may_be_absent"):
                self.problems.append(f"{name} is missing: add it, as in {source}")

    def value(self, name: str, value: Any, tp: Any, source: str, expects: str | None = None) -> None:
        if is_dataclass(tp):
            if isinstance(value, Mapping):
                self.section(value, tp, name + ".", source, name)
            else:
                self.problems.append(f"{name} must be a group of settings ({', '.join(f.name for f in fields(tp))}), "
                                     f"got {value!r}")
            return
        origin = get_origin(tp)
        if origin in (list, List) and _matches(value, tp):
            for i, item in enumerate(value):
                self.value(f"{name}[{i}]", item, get_args(tp)[0], source)
            return
        if origin in (dict, Dict) and isinstance(value, Mapping):
            for key, item in value.items():
                self.value(f"{name}.{key}", item, get_args(tp)[1], source)
            return
        if _matches(value, tp):
            return
        message = f"{name} must be {expects or _describe(tp)}, got {value!r}"
        if set(_alternatives(tp)) - {type(None)} == {str} and isinstance(value, (bool, int, float)):
            message += f" (on the command line, quote it: {name}='{value}')"  # e.g. run_dir=2024
        self.problems.append(message)

    def _allowed(self, name: str) -> bool:
        return name in self.allow or any(a.startswith(name + ".") for a in self.allow)


def _unknown(name: str, key: str, valid: list[str], prefix: str, label: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"{name} is not a setting (did you mean {prefix}{close[0]}?)"
    where = f"{label} has {', '.join(valid)}" if prefix else "see recipes/conf/config.yaml"
    return f"{name} is not a setting ({where}): remove it or correct its name"


def _alternatives(tp: Any) -> tuple:
    if get_origin(tp) in (Union, types.UnionType):
        return tuple(a for arm in get_args(tp) for a in _alternatives(arm))
    return (tp,)


def _matches(value: Any, tp: Any) -> bool:
    """``value`` is of type ``tp`` as given: no conversion (a bool is not an int, an int is a float)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if get_origin(tp) in (Union, types.UnionType):
        return any(_matches(value, arm) for arm in get_args(tp))
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if get_origin(tp) in (list, List):
        return isinstance(value, (list, tuple))
    if get_origin(tp) in (dict, Dict):
        return isinstance(value, Mapping)
    raise TypeError(f"no check for the type {tp!r}")


_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _describe(tp: Any) -> str:
    if get_origin(tp) in (list, List):
        return f"a list of {_PLURALS.get(get_args(tp)[0], 'values')}"
    if get_origin(tp) in (dict, Dict):
        return "a mapping"
    names = [_NAMES.get(a) or _describe(a) for a in _alternatives(tp)]
    names = [n for n in names if n != "null"] + (["null"] if type(None) in _alternatives(tp) else [])
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

