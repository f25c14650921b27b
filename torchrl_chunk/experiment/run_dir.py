"""Run directories: create one safely, refuse to mix two runs in it, and resume it.

A run directory holds ``config.yaml`` (the resolved settings of the run) and whatever the
jobs write. Three rules keep results honest:

* **Checked before anything is written.** :func:`check_writable` turns "is a file", "under
  a file" and "read-only" into one-line errors before training starts.
* **One run per directory.** :func:`open_run_dir` refuses a directory whose ``config.yaml``
  has other settings (it would print the old run's results under the new settings), naming
  the settings that differ.
* **One process per directory.** :func:`lock_run_dir` (called by :func:`open_run_dir` and
  :func:`save_run_settings`) holds an exclusive ``flock`` on ``run.lock`` for the life of
  the process: a second run in the same directory is refused, naming the first one's pid.
  The kernel drops the lock when its process dies, however it dies, so a crashed run never
  leaves a stale lock behind.
* **Resume keeps the training computation.** :func:`resume_settings` takes the saved
  settings and applies only overrides under ``allowed`` prefixes (evaluation, logging,
  devices, worker counts); any other override is refused by name instead of being ignored.
  The resumed settings are written back (:func:`save_run_settings`), so ``config.yaml``
  always says what the run's remaining work uses.

:func:`prepare_run` applies these rules to a Hydra recipe's settings (its ``run_dir`` and
``resume`` settings, the overrides of its command line).

Settings are plain nested dicts (``OmegaConf.to_container`` of a Hydra config); YAML is
written with OmegaConf, which Hydra already brings.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONFIG_FILE = "config.yaml"
LOCK_FILE = "run.lock"
_HELD: dict[Path, int] = {}  # run directory -> file descriptor of its lock, held until exit


class RunDirError(ValueError):
    """A run directory or a resume that cannot be used; the message says how to fix it."""


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists are values)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """The settings that differ, as ``"key: old -> new"`` (``<unset>`` where one lacks it)."""
    a, b = flatten(old), flatten(new)
    missing = "<unset>"
    return [
        f"{k}: {a.get(k, missing)} -> {b.get(k, missing)}"
        for k in sorted(set(a) | set(b))
        if not _under(k, ignore) and a.get(k, missing) != b.get(k, missing)
    ]


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def check_writable(run_dir: Path) -> None:
    """Raise :class:`RunDirError` unless ``run_dir`` is (or can be made) a writable directory."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run_dir={run_dir} is a file, not a directory; choose another run_dir.")
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunDirError(
            f"run_dir={run_dir} is under {parent}, which is a file; choose a run_dir whose parents "
            "are directories."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(
            f"run_dir={run_dir}: {parent} is not writable (read-only file system or permissions); "
            "choose a run_dir on a writable disk."
        )


def lock_run_dir(run_dir: Path) -> None:
    """Hold ``run_dir/run.lock`` for the rest of this process, or raise :class:`RunDirError`
    when another live process holds it (a no-op when this process does already)."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if not isinstance(err, BlockingIOError):  # e.g. a network file system without locks
            os.close(fd)
            warnings.warn(f"{run_dir} cannot be locked ({err.strerror}): nothing stops a second run from using "
                          "it at the same time; start only one run per run_dir.", stacklevel=2)
            _HELD[run_dir] = -1
            return
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirError(
            f"{run_dir} is in use by a run still going ({holder}): wait for it to end, stop it, or "
            "choose another run_dir.") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
    _HELD[run_dir] = fd


def open_run_dir(run_dir: Path, settings: Mapping[str, Any], *, ignore: Sequence[str] = ()) -> bool:
    """Create ``run_dir`` and write ``config.yaml``, or check an existing one matches.

    Returns ``True`` when ``run_dir`` already held a run with the same settings (its jobs go
    on from their checkpoints). A run with other settings (``ignore`` aside) raises
    :class:`RunDirError` naming them and pointing at ``resume=``.
    """
    run_dir = Path(run_dir)
    check_writable(run_dir)
    lock_run_dir(run_dir)
    saved_file = run_dir / CONFIG_FILE
    if saved_file.is_file():
        saved = OmegaConf.to_container(OmegaConf.load(saved_file), resolve=True)
        diff = config_diff(saved, settings, ignore=ignore)
        if diff:
            shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
            raise RunDirError(
                f"{run_dir} already holds a run with other settings ({shown}). Continue that run "
                f"with resume={run_dir}, or choose a new run_dir."
            )
        return True
    save_run_settings(run_dir, settings)
    return False


def save_run_settings(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Write ``config.yaml`` atomically (a kill leaves the old file or the new one)."""
    run_dir = Path(run_dir)
    check_writable(run_dir)
    tmp = run_dir / (CONFIG_FILE + ".tmp")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_run_dir(run_dir)
        OmegaConf.save(OmegaConf.create(dict(settings)), tmp)
        os.replace(tmp, run_dir / CONFIG_FILE)
    except OSError as err:
        raise RunDirError(f"run_dir={run_dir} cannot be written ({err.strerror}); choose another run_dir.") from err


def load_run_settings(run_dir: Path) -> dict[str, Any]:
    """The settings saved in a run directory (for ``resume=``)."""
    saved_file = Path(run_dir) / CONFIG_FILE
    if not saved_file.is_file():
        raise RunDirError(f"resume={run_dir} is not a run directory (no {CONFIG_FILE} in it).")
    return OmegaConf.to_container(OmegaConf.load(saved_file), resolve=True)


def resume_settings(
    saved: Mapping[str, Any],
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any],
    allowed: Sequence[str],
) -> tuple[dict[str, Any], list[str]]:
    """Settings to resume a run with, and the settings the saved run did not have.

    Args:
        saved: the run's ``config.yaml``; every value in it is kept...
        defaults: ...except that settings added since the run started take these values...
        overrides: ...and overrides given now (``{"eval.episodes": 64}``) are applied when
            they fall under one of ``allowed`` (prefixes such as ``"eval"`` or ``"device"``).
        allowed: prefixes that do not change the training computation.

    Raises :class:`RunDirError` naming every override outside ``allowed``.
    """
    refused = sorted(k for k in overrides if not _under(k, allowed))
    if refused:
        raise RunDirError(
            f"resume keeps the run's training settings, but these overrides would change them: "
            f"{', '.join(refused)}. Only {', '.join(allowed)} may change on resume; start a new "
            "run_dir for the others."
        )
    added = sorted(set(flatten(defaults)) - set(flatten(saved)))
    merged = OmegaConf.merge(OmegaConf.create(dict(defaults)), OmegaConf.create(dict(saved)))
    for key, value in overrides.items():
        OmegaConf.update(merged, key, value, force_add=True)
    return OmegaConf.to_container(merged, resolve=True), added


# ----------------------------------------------------------------------------------------
# a Hydra recipe's run: new, continued (same settings) or resumed (allowed overrides only)
# ----------------------------------------------------------------------------------------
def command_line_overrides(exclude: Sequence[str] = ("resume", "run_dir")) -> dict[str, Any]:
    """``key -> value`` of the settings given on the command line (Hydra's task overrides)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return {o.key_or_group: o.value() for o in parsed if o.key_or_group not in exclude}


def timestamped_run_dir(root: Path | str, multirun_tag: str = "") -> Path:
    """``root/<YYYYmmdd_HHMMSS>``; under ``--multirun`` also ``_<job number>_<multirun_tag>``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    stamp = time.strftime("%Y%m%d_%H%M%S")
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:  # one directory per --multirun job
        stamp += f"_{hc.job.num}_{multirun_tag}"
    return Path(root) / stamp


def prepare_run(cfg: DictConfig, *, check: Callable[[DictConfig, list[str]], None], allowed: Sequence[str],
                new_run_dir: Callable[[DictConfig], Path],
                resume_defaults: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
                ) -> tuple[DictConfig, Path]:
    """Check a Hydra recipe's settings, then create, continue or resume its run directory.

    With ``resume=<dir>``: the run's saved settings, settings added since from the defaults and
    the command line's overrides under ``allowed`` (any other is refused), checked by
    ``check(cfg, allow)`` (``allow``: the saved keys, which an older recipe may have written)
    and written back. Otherwise ``check(cfg, [])``, then ``run_dir`` (``new_run_dir(cfg)`` when
    null) is created, or continued when it holds a run with the same settings (``allowed``
    aside). ``resume_defaults(saved)`` gives the defaults that settings added since come from,
    when they depend on the run's own choices (e.g. the settings of the model it was made with,
    not of the default model); without it, ``cfg`` as composed now. ``check`` raises to refuse
    the settings, before anything is written; a run directory
    that cannot be used raises :class:`RunDirError`. Returns the resolved settings (``run_dir``
    set, ``resume`` null) and the run directory.
    """
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = load_run_settings(run_dir)
        overrides = {k: OmegaConf.select(cfg, k) for k in command_line_overrides()}
        defaults = resume_defaults(saved) if resume_defaults else OmegaConf.to_container(cfg, resolve=True)
        settings, added = resume_settings(saved, defaults, overrides, allowed)
        cfg = OmegaConf.create({**settings, "run_dir": str(run_dir), "resume": None})
        check(cfg, list(flatten(saved)))  # keys an older recipe wrote are kept
        save_run_settings(run_dir, OmegaConf.to_container(cfg))
        print(f"resuming {run_dir}")
        if added:
            print(f"  settings not in its config.yaml, from the defaults: {', '.join(added)}")
        if overrides:
            print(f"  with {', '.join(f'{k}={v}' for k, v in overrides.items())}")
        return cfg, run_dir
    check(cfg, [])
    run_dir = Path(cfg.run_dir) if cfg.run_dir else new_run_dir(cfg)
    cfg = OmegaConf.create({**OmegaConf.to_container(cfg, resolve=True), "run_dir": str(run_dir)})
    if open_run_dir(run_dir, OmegaConf.to_container(cfg), ignore=("run_dir", "resume", *allowed)):
        save_run_settings(run_dir, OmegaConf.to_container(cfg))  # e.g. new eval.* settings
        print(f"continuing {run_dir} (same training settings)")
    return cfg, run_dir
