"""torchrl_chunk.experiment.shared_stage: a stage computed once per run, loaded as if computed."""

from __future__ import annotations

import torch

from torchrl_chunk.experiment import load_stage, save_stage, settings_key


def test_settings_key_drops_only_the_independent_settings():
    s = {"bc": {"steps": 10, "floor": 0.1}, "ppo": {"epochs": 5}, "seed": 1}
    key = settings_key(s, ["ppo", "bc.floor"])
    assert key == settings_key({"bc": {"steps": 10}, "seed": 1})
    assert key == settings_key({**s, "ppo": {"epochs": 3}}, ["ppo", "bc.floor"])
    assert key != settings_key({**s, "bc": {"steps": 11, "floor": 0.1}}, ["ppo", "bc.floor"])
    assert key != settings_key({**s, "new": 1}, ["ppo", "bc.floor"])  # a setting added later counts


def test_a_loaded_stage_goes_on_as_if_computed(tmp_path):
    def stage():
        torch.manual_seed(0)
        net, gen = torch.nn.Linear(3, 2), torch.Generator().manual_seed(5)
        torch.nn.init.normal_(net.weight)  # the stage: draws from torch's RNG, changes the weights
        torch.randint(0, 9, (4,), generator=gen)
        return net, gen

    net, gen = stage()
    save_stage(tmp_path / "s.pt", {"net": net}, {"gen": gen}, info={"by": "job a"})
    after = (torch.rand(3), torch.rand(2, generator=gen))  # what the computing job draws next

    torch.manual_seed(123)
    fresh, fresh_gen = torch.nn.Linear(3, 2), torch.Generator().manual_seed(9)
    assert load_stage(tmp_path / "s.pt", {"net": fresh}, {"gen": fresh_gen}) == {"by": "job a"}
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))
    assert torch.equal(torch.rand(3), after[0]) and torch.equal(torch.rand(2, generator=fresh_gen), after[1])
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary file left


def test_a_missing_or_damaged_stage_is_computed_again(tmp_path, capsys):
    net = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert load_stage(tmp_path / "none.pt", {"net": net}) is None
    save_stage(tmp_path / "s.pt", {"net": torch.nn.Linear(3, 2), "other": torch.nn.Linear(3, 3)})
    other = torch.nn.Linear(3, 4)  # "other" does not fit: nothing of the file may stay in the modules
    assert load_stage(tmp_path / "s.pt", {"net": net, "other": other}) is None
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    (tmp_path / "s.pt").write_bytes(b"not a checkpoint")
    assert load_stage(tmp_path / "s.pt", {"net": net}) is None
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # one line per file that does not load
    assert len(lines) == 2 and all(line.startswith("warning: ") and line.endswith("computing the stage again")
                                   for line in lines)
