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
    (["run", "tau-sweep", "--set", "train.adam_fused=maybe"], "train.adam_fused='maybe'"),
    (["run", "balancemix-delta-alpha", "--set", "hp.peer_adam_fused=3"], "hp.peer_adam_fused='3'"),
    (["run", "tau-sweep", "--until-decided", "--max-seeds", "0"], "--max-seeds=0"),
    (["run", "tau-sweep", "--until-decided", "--max-seeds", "-3"], "--max-seeds=-3"),
    (["run", "tau-sweep", "--max-seeds", "15"], "--max-seeds=15 is not allowed: only with --until-decided"),
    (["run", "tau-sweep", "--seeds-per-round", "2"], "--seeds-per-round=2 is not allowed: only with --until-decided"),
    (["run", "tau-sweep", "--until-decided", "--seeds-per-round", "0"], "--seeds-per-round=0"),
    (["run", "tau-sweep", "--until-decided", "--search", "optuna"], "--search='optuna' is not allowed: grid with"),
    (["run", "tau-sweep", "--until-decided", "--scheduler", "asha"], "--scheduler='asha'"),
    (["run", "tau-sweep", "--until-decided", "--max-seeds", "5"], "--max-seeds=5 is not allowed: more than the 5"),
    (["run", "tau-sweep", "--until-decided", "--seeds", "4", "--max-seeds", "3"], "more than the 4 seeds"),
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


def test_options_table_is_the_generated_one():
    """docs/OPTIONS.md's table of ``weaklab run``'s options is built from the same dataclass
    fields as the parser: a new option without a row there fails here (the README links it)."""
    import os

    from weaklab.cli import options_table

    root = os.path.join(os.path.dirname(__file__), "..")
    docs = open(os.path.join(root, "docs", "OPTIONS.md")).read()
    assert options_table() in docs, ("docs/OPTIONS.md's options table is stale; regenerate it with:\n"
                                     "python3 -c \"from weaklab.cli import options_table; print(options_table())\"")
    assert "docs/OPTIONS.md" in open(os.path.join(root, "README.md")).read()


def test_every_run_option_has_help_and_its_default_from_the_dataclass(monkeypatch):
    import weaklab.tune.runner as runner
    from weaklab.cli import run_options

    assert all(o.help for o in run_options()), [o.flag for o in run_options() if not o.help]
    seen = {}

    def fake_run_study(plan, *, options):
        seen["plan"], seen["options"] = plan, options
        return "/nowhere"

    monkeypatch.delenv("WEAKLAB_STORAGE", raising=False)
    monkeypatch.setattr(runner, "run_study", fake_run_study)
    assert main(["run", "tau-sweep", "--no-report"]) == 0
    assert seen["options"] == runner.RunOptions()  # no default of its own in the parser
    assert seen["plan"].planned_trials() == len(seen["plan"].configs)
    assert main(["run", "tau-sweep", "--no-report", "--seeds", "2", "--set", "train.epochs=3",
                 "--checkpoint-every-s", "0", "--max-concurrent", "2"]) == 0
    assert seen["options"] == runner.RunOptions(checkpoint_every_s=0.0, max_concurrent=2)
    assert {c["seed"] for c in seen["plan"].configs} == {0, 1}
    assert {t.train.epochs for t in seen["plan"].trials} == {3}
    monkeypatch.setenv("WEAKLAB_STORAGE", "/tmp/elsewhere")
    assert runner.RunOptions().storage == "/tmp/elsewhere"


@pytest.mark.parametrize("name", ["qll-compare", "balancemix-delta-alpha", "tau-sweep", "cpu-prior"])
def test_planned_trials_is_what_the_runner_starts(name):
    """`weaklab studies` and `weaklab run` print the count the runner starts: for a
    select-then-seeds study, its select trials plus the final configs the runner picks from
    them (here from select rows with random scores; arms sharing a label choose together),
    less the chosen points' select seeds, which are stored again, not re-run."""
    import numpy as np
    import pandas as pd

    from weaklab.tune.runner import _carried, _chosen_trials, planned_final, prepare, split_select

    plan = prepare(name, build_data=False)
    study = plan.study
    if not study.select_then_seeds:
        assert plan.planned_trials() == len(plan.configs)
        return
    select, _ = split_select(study, plan.trials)
    assert {t.seed for t in select} == set(range(min(study.select_seeds, study.seeds)))
    rows = pd.DataFrame([t.config for t in select]).assign(status="completed")
    rows[study.metric] = np.random.default_rng(0).random(len(rows))
    final = _chosen_trials(study, plan.trials, rows)
    assert planned_final(study, plan.trials) == len(final)
    carried = _carried(final, rows.assign(trial_id=[f"s{i}" for i in range(len(rows))]))
    assert carried and {final[i].seed for i in carried} == {t.seed for t in select}
    assert plan.planned_trials() == len(select) + len(final) - len(carried)
