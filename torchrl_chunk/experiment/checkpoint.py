"""Crash-safe job checkpoints: weights, optimiser, counters and the demo buffer, always together.

A job directory holds one ``checkpoint/`` directory with ``state.pt`` (the ``state_dict`` of
every module given, the training counters and the torch CPU and CUDA RNG states), ``buffer/``
(the demo buffer's own ``dumps``), both from the same iteration, and ``manifest.json`` (the
size and SHA-256 of every other file, written last). A save writes ``checkpoint.tmp/``
completely, then renames ``checkpoint/ -> checkpoint.old/``, ``checkpoint.tmp/ ->
checkpoint/``, and ``checkpoint.old/ -> checkpoint.prev/`` (the one before, kept). A kill at
any point of that (SIGKILL, a full disk, a pre-empted node) leaves one complete checkpoint
that :func:`recover_checkpoint` finds: ``checkpoint/`` if it exists, otherwise
``checkpoint.old/``.

Loading verifies every file against the manifest. A damaged checkpoint (a truncated or
altered file, a file gone) is never loaded: :func:`load_checkpoint` sets it aside as
``checkpoint.damaged/`` and makes ``checkpoint.prev/`` the checkpoint when that one verifies,
and says so; otherwise it raises, naming the damaged file.

:func:`check_capacity` checks before training that the machine can hold what a job will
need (e.g. the demo buffer's ``footprint``), so a run fails at its start in one line rather
than hours later with a full disk or the OOM killer.

Why hand-written: TorchRL's ``Trainer`` checkpoints a single file and its replay buffers dump a
directory each, with no atomic swap of the two; a torn pair (weights of iteration k with the
buffer of iteration k-1) would resume silently on the wrong data.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch

from torchrl_chunk.experiment.state import JobState

CHECKPOINT_DIR = "checkpoint"  # <job>/checkpoint/{state.pt, buffer/}
STATE_FILE = "state.pt"
BUFFER_DIR = "buffer"
MANIFEST_FILE = "manifest.json"  # {relative path: [size, sha256]} of every other file
_OLD_LAYOUT = "checkpoint.pt"  # before crash-safe directories (first landing's early runs)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do with it."""


class Dumpable(Protocol):
    """What a buffer needs to travel with a checkpoint (TorchRL replay buffers have both)."""

    def dumps(self, path: str | Path) -> Any: ...

    def loads(self, path: str | Path) -> Any: ...


class CapacityError(RuntimeError):
    """The machine cannot hold what a job needs; the message names the shortfall and the fix."""


def _mem_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; ``None`` where there is none (not Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def check_capacity(ram_bytes: int, disk_bytes: int, path: str | Path) -> None:
    """Raise :class:`CapacityError` unless RAM and the disk holding ``path`` can take the bytes.

    ``ram_bytes`` is compared with ``MemAvailable`` (skipped where ``/proc/meminfo`` does
    not exist), ``disk_bytes`` with the free space of the file system of ``path`` (or of its
    nearest existing parent, so a job directory not created yet works). Pass the sums of
    every job that runs at once on this machine, e.g. from the demo buffer's
    :meth:`~torchrl_chunk.data.LengthFilteredReplayBuffer.footprint` (``ram_bytes``,
    ``disk_bytes``).
    """
    available = _mem_available()
    if available is not None and ram_bytes > available:
        raise CapacityError(
            f"{_gb(ram_bytes)} of RAM needed, {_gb(available)} available (MemAvailable): lower "
            "buffer.max_size or use buffer.storage=memmap."
        )
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if disk_bytes > free:
        raise CapacityError(
            f"{_gb(disk_bytes)} of disk needed under {path}, {_gb(free)} free: free disk space "
            "there, use another run directory or lower buffer.max_size."
        )


def checkpoint_dirs(job_dir: Path) -> tuple[Path, Path, Path]:
    """``(checkpoint, checkpoint.old, checkpoint.tmp)`` of a job directory."""
    return tuple(Path(job_dir) / (CHECKPOINT_DIR + suffix) for suffix in ("", ".old", ".tmp"))


def previous_dir(job_dir: Path) -> Path:
    """``checkpoint.prev``: the checkpoint before the current one, kept as a fallback."""
    return Path(job_dir) / (CHECKPOINT_DIR + ".prev")


def _sha256(path: Path, block: int = 2**20) -> str:
    digest = hashlib.sha256()  # read in blocks (hashlib.file_digest needs Python 3.11)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """Record the size and SHA-256 of every file under ``directory`` in its manifest."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    entries = {str(p.relative_to(directory)): [p.stat().st_size, _sha256(p)] for p in files}
    (directory / MANIFEST_FILE).write_text(json.dumps(entries, indent=0))


def verify_manifest(directory: Path) -> str | None:
    """``None`` when every file of the manifest is there with its size and checksum, else what
    is wrong (one line). A checkpoint written before manifests existed has none and passes."""
    manifest = directory / MANIFEST_FILE
    if not manifest.exists():
        return None
    try:
        entries = json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        return f"{manifest} is unreadable ({err})"
    for rel, (size, digest) in entries.items():
        path = directory / rel
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size} bytes, the checkpoint wrote {size}"
        if _sha256(path) != digest:
            return f"{path} does not match its checksum (altered after it was written)"
    return None


def recover_checkpoint(job_dir: Path) -> Path | None:
    """Bring ``job_dir`` back to one consistent checkpoint after a kill; return its directory.

    Safe to kill too: every step leaves a state this function repairs on its next call.
    """
    ckpt, old, tmp = checkpoint_dirs(job_dir)
    if tmp.exists():  # killed while writing (or before its rename): never trusted
        shutil.rmtree(tmp)
    if old.exists():
        if ckpt.exists():  # killed before the previous checkpoint became checkpoint.prev
            prev = previous_dir(job_dir)
            if prev.exists():
                shutil.rmtree(prev)
            os.replace(old, prev)
        else:  # killed between the two renames: the previous checkpoint is the good one
            os.replace(old, ckpt)
    prev = previous_dir(job_dir)
    if not ckpt.exists() and prev.exists():  # killed while a damaged checkpoint was set aside
        os.replace(prev, ckpt)
    if ckpt.exists() and not (ckpt / STATE_FILE).exists():
        raise CheckpointError(
            f"{ckpt} has no {STATE_FILE}, so it is not a checkpoint torchrl_chunk wrote; "
            f"delete {ckpt} to restart this job from scratch."
        )
    old_layout = Path(job_dir) / _OLD_LAYOUT
    if not ckpt.exists() and old_layout.exists():
        raise CheckpointError(
            f"{old_layout} is in the layout of an earlier version (no crash-safe directory). To "
            f"resume it: mkdir {ckpt} && mv {old_layout} {ckpt / STATE_FILE} && mv "
            f"{Path(job_dir) / BUFFER_DIR} {ckpt / BUFFER_DIR} (if it exists); or delete it to "
            "restart this job."
        )
    return ckpt if ckpt.exists() else None


def _check_finite(job_dir: Path, modules: Mapping[str, Any]) -> None:
    for name, module in modules.items():
        for pname, p in module.state_dict().items():
            if torch.is_tensor(p) and p.is_floating_point() and not torch.isfinite(p).all():
                raise FloatingPointError(
                    f"{name}.{pname} holds NaN/inf; the last good checkpoint in {job_dir} is kept."
                )


def save_checkpoint(
    job_dir: Path, state: Mapping[str, Any] | JobState, modules: Mapping[str, Any], buffer: Dumpable | None
) -> Path:
    """Write ``state``, every module's ``state_dict`` and ``buffer`` as the job's checkpoint.

    ``state``: a :class:`~torchrl_chunk.experiment.state.JobState` (saved as the dict of its
    fields) or any mapping of counters. Raises ``FloatingPointError`` (and keeps the previous
    checkpoint) when a module holds NaN/inf: a checkpoint is never worse than the one before
    it. Returns its directory.
    """
    job_dir = Path(job_dir)
    _check_finite(job_dir, modules)
    payload = state.to_dict() if isinstance(state, JobState) else dict(state)
    payload["modules"] = {k: v.state_dict() for k, v in modules.items()}
    payload["torch_rng"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CUDA learner draws there too
        payload["cuda_rng"] = torch.cuda.get_rng_state_all()
    recover_checkpoint(job_dir)
    ckpt, old, tmp = checkpoint_dirs(job_dir)
    tmp.mkdir()
    if buffer is not None:
        buffer.dumps(tmp / BUFFER_DIR)
    torch.save(payload, tmp / STATE_FILE)
    write_manifest(tmp)
    if ckpt.exists():
        os.replace(ckpt, old)
    os.replace(tmp, ckpt)  # the commit point
    if old.exists():
        prev = previous_dir(job_dir)
        if prev.exists():
            shutil.rmtree(prev)
        os.replace(old, prev)
    return ckpt


def save_job_checkpoint(
    job_dir: Path, state: Mapping[str, Any] | JobState, modules: Mapping[str, Any], buffer: Dumpable | None
) -> Path:
    """:func:`save_checkpoint`, with a failure of the disk said in one line.

    A save that fails for the disk (full, not writable) removes its partial ``checkpoint.tmp/``
    (on a full disk, that space comes back), keeps the previous checkpoint and raises a
    :class:`CheckpointError` whose ``errno`` says why (``ENOSPC`` also when ``torch.save``
    reports a full disk only as a ``RuntimeError``) and whose ``filename`` is the file that
    failed; :func:`~torchrl_chunk.experiment.launcher.failure_message` words the fix. Any
    other error (e.g. a module that cannot be pickled) is raised as it is.
    """
    try:
        return save_checkpoint(job_dir, state, modules, buffer)
    except (OSError, RuntimeError) as err:
        try:
            full = shutil.disk_usage(job_dir).free < 16 << 20  # torch.save: "unexpected pos ..." on a full disk
        except OSError:
            full = False
        code = errno.ENOSPC if full else getattr(err, "errno", None)
        if code is None:  # not the disk
            raise
        try:
            recover_checkpoint(job_dir)  # drops checkpoint.tmp/; the previous checkpoint stays
        except Exception:  # noqa: BLE001 - the error below matters more
            pass
        iteration = state.iteration if isinstance(state, JobState) else state["iteration"]
        failure = CheckpointError(f"could not write the checkpoint of iteration {iteration} in {job_dir} "
                                  f"({type(err).__name__}: {' '.join(str(err).split())})")
        failure.errno, failure.filename = code, getattr(err, "filename", None)
        raise failure from err


def last_good_checkpoint(job_dir: Path) -> tuple[Path | None, int | None, str | None]:
    """``(directory, iteration, note)`` of the checkpoint a resume of ``job_dir`` would load, or
    ``(None, None, why)`` when it would load none (``why`` is ``None``: nothing was checkpointed).

    Decided as :func:`load_checkpoint` decides: ``checkpoint/`` when its manifest verifies
    (``checkpoint.prev/`` when only that one does, ``note`` naming the damage) and its
    ``state.pt`` loads; a checkpoint that cannot be loaded is never returned."""
    try:
        ckpt = recover_checkpoint(job_dir)  # what the next start repairs, e.g. a kill mid-save
    except CheckpointError as err:
        return None, None, " ".join(str(err).split())
    if ckpt is None:
        return None, None, None
    note, damage = None, verify_manifest(ckpt)
    if damage is not None:
        prev = previous_dir(job_dir)
        if not (prev / STATE_FILE).exists() or verify_manifest(prev) is not None:
            return None, None, f"{ckpt} is damaged: {damage}"
        note, ckpt = f"{ckpt} is damaged: {damage}", prev
    try:
        iteration = int(torch.load(ckpt / STATE_FILE, weights_only=False, mmap=True, map_location="cpu")["iteration"])
    except Exception as err:  # noqa: BLE001 - any unreadable state.pt
        return None, None, f"{ckpt / STATE_FILE} does not load ({type(err).__name__})"
    return ckpt, iteration, note


def load_checkpoint(
    job_dir: Path, modules: Mapping[str, Any], buffer: Dumpable | None
) -> dict[str, Any] | None:
    """Restore ``modules`` and ``buffer`` (and the torch RNG) from the job's checkpoint.

    Returns the saved state (counters, ``"modules"``, ``"torch_rng"``, ``"cuda_rng"`` when a
    CUDA learner saved it; :meth:`.state.JobState.from_dict` reads the counters back), or
    ``None`` when the job has no checkpoint yet. An unreadable checkpoint raises :class:`CheckpointError` and
    is left untouched.
    """
    ckpt = recover_checkpoint(job_dir)
    if ckpt is None:
        return None
    damage = verify_manifest(ckpt)
    if damage is not None:
        prev = previous_dir(job_dir)
        if not (prev / STATE_FILE).exists() or verify_manifest(prev) is not None:
            raise CheckpointError(
                f"checkpoint {ckpt} is damaged: {damage}; no good earlier checkpoint is left. "
                f"Delete {ckpt} (and {prev.name}, if any) to restart this job from scratch.")
        # the damaged one is kept aside for a look, never rotated into checkpoint.prev (the next
        # save would then delete the good one resumed from)
        damaged = Path(job_dir) / (CHECKPOINT_DIR + ".damaged")
        if damaged.exists():
            shutil.rmtree(damaged)
        os.replace(ckpt, damaged)
        os.replace(prev, ckpt)  # a kill between the two: recover_checkpoint promotes prev
        warnings.warn(f"checkpoint {damaged.name} was damaged ({damage}); resuming from the one before it, "
                      f"now {ckpt}.", stacklevel=2)
    try:
        payload = torch.load(ckpt / STATE_FILE, weights_only=False)
        for k, module in modules.items():
            module.load_state_dict(payload["modules"][k])
        if buffer is not None:
            if not (ckpt / BUFFER_DIR).exists():
                raise FileNotFoundError(f"{ckpt / BUFFER_DIR} (the demo buffer saved with it) is missing")
            buffer.loads(ckpt / BUFFER_DIR)
    except Exception as err:  # noqa: BLE001 - report any unreadable checkpoint the same way
        raise CheckpointError(
            f"checkpoint {ckpt} cannot be loaded ({type(err).__name__}: {err}). "
            f"Delete {ckpt} (and {previous_dir(job_dir).name}, if any) to restart this job from scratch."
        ) from err
    torch.set_rng_state(payload["torch_rng"])
    if "cuda_rng" in payload and torch.cuda.is_available() and len(payload["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
    return payload
