"""Bad input ends the command with one line naming parameter, value and what is allowed,
exit status 2, before Ray starts."""

import pytest

from weaklab.cli import main


@pytest.mark.parametrize("argv,expect", [
    (["run", "no-such-study"], "study='no-such-study'"),
    (["run", "tau-sweep", "--dataset", "imagenet"], "dataset='imagenet'"),
    (["run", "tau-sweep", "--set", "hp.tau=0"], "hp.tau=0"),
    (["run", "tau-sweep", "--set", "hp.tau=-2"], "hp.tau=-2"),
    (["run", "tau-sweep", "--set", "hp.train_samples=0"], "hp.train_samples=0"),
    (["run", "tau-sweep", "--set", "hp.eval_samples=0"], "hp.eval_samples=0"),
    (["run", "tau-sweep", "--set", "setting.rate=1.5"], "setting.rate=1.5"),
    (["run", "tau-sweep", "--set", "setting.protocol=weird"], "setting.protocol='weird'"),
    (["run", "tau-sweep", "--set", "hp.lambda=3"], "--set hp.lambda"),
    (["run", "tau-sweep", "--set", "train.nope=1"], "--set train.nope"),
    (["run", "tau-sweep", "--set", "train.epochs=many"], "train.epochs='many'"),
    (["run", "tau-sweep", "--set", "noequals"], "KEY=VALUE"),
    (["run", "tau-sweep", "--gpus-per-trial", "1.5"], "--gpus-per-trial=1.5"),
    (["run", "tau-sweep", "--gpus-per-trial", "-1"], "--gpus-per-trial=-1"),
    (["run", "tau-sweep", "--cpus-per-trial", "0"], "--cpus-per-trial=0"),
    (["run", "tau-sweep", "--search", "random"], "--search='random'"),
    (["run", "tau-sweep", "--num-samples", "5"], "--num-samples=5"),
    (["run", "tau-sweep", "--seeds", "0"], "--seeds=0"),
    (["run", "tau-sweep", "--dataset", "cifar10"], "--data-root"),
    (["run", "tau-sweep", "--dataset", "cifar10", "--data-root", "/nonexistent-dir"], "/nonexistent-dir"),
])
def test_bad_input_is_one_line_before_ray(argv, expect, capsys, monkeypatch):
    import weaklab.tune.runner as runner

    started = []
    monkeypatch.setattr(runner, "_init_ray", lambda opts: started.append(opts))  # the runner's one way into Ray
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weaklab: error:") and expect in err, err
    assert "\n" not in err
    assert started == [], "Ray was started before the error"


def test_unknown_method_in_a_config_is_one_line():
    from weaklab.config import parse_trial
    from weaklab.registry import ConfigError

    with pytest.raises(ConfigError, match="method='nope'"):
        parse_trial({"dataset": "digits", "setting": "noise", "method": "nope", "seed": 0})


def test_studies_lists_every_study(capsys):
    from studies import STUDIES

    assert main(["studies"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(STUDIES.names())
    assert any(line.startswith("tau-sweep") for line in out)
