"""Run directories: checked before anything is written, one run each, resume rules."""

from __future__ import annotations

import os

import pytest
from omegaconf import OmegaConf

from torchrl_chunk.experiment import RunDirError, check_writable, config_diff, open_run_dir, resume_settings
from torchrl_chunk.experiment.run_dir import load_run_settings

SETTINGS = {"seed": 1, "train": {"total_env_steps": 600, "lr": 3e-4}, "eval": {"episodes": 8}, "run_dir": "x"}


def test_a_file_or_a_path_under_a_file_is_refused_before_anything_is_written(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        open_run_dir(f, SETTINGS)
    with pytest.raises(RunDirError, match="which is a file"):
        open_run_dir(f / "run", SETTINGS)
    assert f.read_text() == "keep me"


def test_a_read_only_parent_is_refused(tmp_path, monkeypatch):
    # As root, permission bits do not stop writes; access() still reports a read-only mount.
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    with pytest.raises(RunDirError, match="not writable .*read-only"):
        check_writable(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_write_errors_become_one_line_errors(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(OmegaConf, "save", fail)
    with pytest.raises(RunDirError, match="cannot be written \\(Read-only file system\\)"):
        open_run_dir(tmp_path / "run", SETTINGS)


def test_one_run_per_directory(tmp_path):
    run = tmp_path / "run"
    assert open_run_dir(run, SETTINGS) is False
    assert load_run_settings(run) == SETTINGS
    assert open_run_dir(run, SETTINGS) is True  # same settings: the run goes on
    other = {**SETTINGS, "train": {"total_env_steps": -600, "lr": 3e-4}}
    with pytest.raises(RunDirError) as err:
        open_run_dir(run, other)
    msg = str(err.value)
    assert "train.total_env_steps: 600 -> -600" in msg and f"resume={run}" in msg and "\n" not in msg
    assert load_run_settings(run) == SETTINGS  # config.yaml not overwritten
    # settings named in ``ignore`` may differ (e.g. evaluation only)
    assert open_run_dir(run, {**SETTINGS, "eval": {"episodes": 4}}, ignore=("eval",)) is True


def test_config_diff_names_added_and_removed_settings():
    assert config_diff({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c: <unset> -> 2"]
    assert config_diff({"a": 1, "run_dir": "x"}, {"a": 1, "run_dir": "y"}, ignore=("run_dir",)) == []


def test_resume_applies_allowed_overrides_and_refuses_the_others():
    saved = {"seed": 1, "eval": {"episodes": 8}, "optim": {"lr": 3e-4}}
    defaults = {"seed": 1, "eval": {"episodes": 128, "video": 4}, "optim": {"lr": 1e-5}}
    settings, added = resume_settings(saved, defaults, {"eval.episodes": 16}, allowed=("eval", "device"))
    assert settings == {"seed": 1, "eval": {"episodes": 16, "video": 4}, "optim": {"lr": 3e-4}}
    assert added == ["eval.video"]
    with pytest.raises(RunDirError, match="would change them: optim.lr, seed\\. Only eval, device"):
        resume_settings(saved, defaults, {"optim.lr": 1.0, "seed": 2, "eval.episodes": 4}, allowed=("eval", "device"))


def test_resume_of_a_directory_without_config(tmp_path):
    with pytest.raises(RunDirError, match="is not a run directory"):
        load_run_settings(tmp_path)


def test_a_second_process_cannot_use_a_run_dir_in_use_and_a_dead_ones_lock_is_taken_over(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from torchrl_chunk.experiment.run_dir import LOCK_FILE, RunDirError, lock_run_dir

    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from torchrl_chunk.experiment.run_dir import lock_run_dir; "
                               f"lock_run_dir({str(run_dir)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"in use by a run still going \(pid {holder.pid} on .*choose another run_dir"):
            lock_run_dir(run_dir)
        with pytest.raises(RunDirError, match="in use"):
            open_run_dir(run_dir, {"a": 1})  # before config.yaml is touched
        assert not (run_dir / "config.yaml").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
        holder.wait()
    assert (run_dir / LOCK_FILE).exists()  # the file stays, its lock died with the process
    lock_run_dir(run_dir)
    lock_run_dir(run_dir)  # this process holds it: a no-op
    assert open_run_dir(run_dir, {"a": 1}) is False
