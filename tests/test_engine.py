import math

import pytest
import torch

from studies import STUDIES, expand, resolve
from weaklab.engine import run_trial
from weaklab.store import selected_so_far


def _cfg(method="heteroscedastic", **over):
    cfg = next(c for c in expand(resolve(STUDIES.get("tau-sweep"), smoke=True)) if c["method"] == method)
    cfg.update({"train.epochs": 3, "train.arch": "mlp", "train.width": 0.1, **over})
    if method == "heteroscedastic":
        cfg["hp.eval_samples"] = 50
    return cfg


TIMING = ("epoch_s", "epoch_cpu_s", "method_s", "train_s", "samples_per_s")


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def test_same_seed_same_run_on_cpu():
    a, b = run_trial(_cfg()), run_trial(_cfg())
    assert _strip(a.history) == _strip(b.history)
    c = run_trial(_cfg(seed=1))
    assert _strip(a.history) != _strip(c.history)


def test_reports_every_split_and_the_selected_epoch():
    seen = []
    r = run_trial(_cfg(), on_epoch=lambda h, save, last: seen.append((dict(h[-1]), last)))
    assert [s[1] for s in seen] == [False, False, True]
    row = r.history[-1]
    for k in ("train_loss", "val_acc", "val_ll", "test_acc", "test_ll", "test_noisy_acc", "test_noisy_ll",
              "best_epoch"):
        assert k in row and math.isfinite(row[k])
    # one name per number: an epoch row holds its own epoch's metrics, no running copies
    assert not any(k.startswith("best_") and k != "best_epoch" for h in r.history for k in h)
    best = r.best
    assert best["val_acc"] == max(h["val_acc"] for h in r.history)
    assert selected_so_far(r.history) == {k.replace("val_", "best.val_", 1): v for k, v in best.items()
                                          if k.startswith("val_")}


def test_checkpoint_restore_continues_exactly(tmp_path):
    full = run_trial(_cfg(**{"train.epochs": 4}))
    saved = {}

    def stop_after_two(history, save, last):
        if history[-1]["epoch"] == 2:
            save(str(tmp_path))
            saved["h"] = list(history)
            raise KeyboardInterrupt  # simulate a node dying after epoch 2

    with pytest.raises(KeyboardInterrupt):
        run_trial(_cfg(**{"train.epochs": 4}), on_epoch=stop_after_two)
    resumed = run_trial(_cfg(**{"train.epochs": 4}), restore=str(tmp_path))
    assert len(resumed.history) == 4
    assert _strip(resumed.history) == _strip(full.history)


def test_checkpoint_loads_with_weights_only(tmp_path):
    run_trial(_cfg(**{"train.epochs": 1}), on_epoch=lambda h, save, last: save(str(tmp_path)))
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert {"model", "optimizer", "method", "history", "torch_rng"} <= set(state)


def test_early_stopping_uses_patience():
    r = run_trial(_cfg(**{"train.epochs": 50, "train.patience": 1, "train.lr": 1e-7}))
    assert r.stopped_early and len(r.history) < 50
    assert len(r.history) - r.best_epoch == 1


def test_nan_loss_raises():
    with pytest.raises(FloatingPointError, match="loss became"):
        run_trial(_cfg("homoscedastic", **{"train.lr": 1e30, "train.epochs": 3}))


def test_multistep_schedule_decays_at_fractions_of_training():
    r = run_trial(_cfg(**{"train.epochs": 4, "train.schedule": "multistep", "train.milestones": "0.5,0.75",
                          "train.step_gamma": 0.1, "train.lr": 1e-3}))
    # the row records the lr after the epoch's scheduler step: decays after epochs 2 and 3
    lrs = [h["lr"] for h in r.history]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(1e-4) and lrs[2] == pytest.approx(1e-5)


def test_bad_milestones_are_one_line():
    from weaklab.config import TrainConfig
    from weaklab.registry import ConfigError

    with pytest.raises(ConfigError, match="train.milestones='0.5,1.5'"):
        TrainConfig(milestones="0.5,1.5")


def test_second_stage_keeps_first_stage_weights_at_the_switch():
    """PLOT's first stage is DLLP, and the switch to stage two (student_init=teacher: a fresh
    optimizer, the same weights) keeps the stage-one model: its row at the last DLLP epoch
    equals plain DLLP's with the same seed."""
    from studies import STUDIES

    study = resolve(STUDIES.get("llp-bag-size"), smoke=True)
    cfgs = expand(study)
    plot = next(c for c in cfgs if c["method"] == "plot" and c.get("hp.student_init", "teacher") == "teacher")
    s1 = 2
    plot = {**plot, "hp.stage1_epochs": s1, "train.epochs": s1 + 1, "train.patience": 0}
    dllp = next(c for c in cfgs if c["method"] == "dllp" and c["seed"] == plot["seed"]
                and c.get("setting.bag_size") == plot.get("setting.bag_size"))
    dllp = {**dllp, "train.epochs": s1, "train.patience": 0}
    for k in ("train.arch", "train.width", "train.lr", "train.batch_size", "train.adam_beta1"):
        dllp[k] = plot.get(k, dllp.get(k))
    a, b = run_trial(plot).history, run_trial(dllp).history
    assert a[s1 - 1]["test_acc"] == pytest.approx(b[s1 - 1]["test_acc"])


def test_a_run_resumed_from_its_early_stopping_checkpoint_stays_stopped(tmp_path):
    cfg = _cfg(**{"train.epochs": 50, "train.patience": 1, "train.lr": 1e-7})
    first = run_trial(cfg, on_epoch=lambda h, save, last: save(str(tmp_path)) if last else None)
    assert first.stopped_early
    again = run_trial(cfg, restore=str(tmp_path))
    assert again.stopped_early and len(again.history) == len(first.history)


def test_eval_splits_best_evaluates_other_splits_only_at_best_and_last_epochs():
    every = run_trial(_cfg("homoscedastic", **{"train.epochs": 6}))
    lazy = run_trial(_cfg("homoscedastic", **{"train.epochs": 6, "train.eval_splits": "best"}))
    best_so_far, keep = -math.inf, set()
    for h in every.history:
        if h["val_acc"] > best_so_far:
            best_so_far, keep = h["val_acc"], keep | {h["epoch"]}
    keep.add(6)
    for a, b in zip(every.history, lazy.history):
        assert a["val_acc"] == b["val_acc"] and a["val_ll"] == b["val_ll"]  # val every epoch, same run
        for k in ("test_acc", "test_ll", "test_noisy_ll"):
            if a["epoch"] in keep:
                assert a[k] == b[k]  # exact at the best-so-far and last epochs
            else:
                assert math.isnan(b[k])
    assert lazy.best_epoch == every.best_epoch and lazy.best["test_noisy_ll"] == every.best["test_noisy_ll"]
    assert lazy.final["test_acc"] == every.final["test_acc"]


def test_eval_splits_bad_value_is_one_line():
    from weaklab.registry import ConfigError

    with pytest.raises(ConfigError, match=r"train.eval_splits='sometimes' .*every or best") as e:
        run_trial(_cfg(**{"train.eval_splits": "sometimes"}))
    assert "\n" not in str(e.value)


def test_a_worker_with_the_drivers_cache_reads_no_clean_dataset(tmp_path):
    """What the driver cached, a fresh worker process trains on without loading the clean
    dataset (nor scikit-learn for digits), on the same tensors as the driver's."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "WEAKLAB_CACHE": str(tmp_path)}
    probe = ("import sys, hashlib, torch\n"
             "from studies import STUDIES, expand\n"
             "from weaklab.engine import build_trial\n"
             "{pre}"
             "_, weak, _ = build_trial(expand(STUDIES.get('tau-sweep'))[0])\n"
             "h = hashlib.md5(b''.join(t.numpy().tobytes() for t in (weak.x, *weak.weak.values(), "
             "*[x for pair in weak.evals.values() for x in pair]))).hexdigest()\n"
             "print(h, 'sklearn' in sys.modules)\n")
    run = lambda pre="": subprocess.run([sys.executable, "-c", probe.format(pre=pre)], env=env, cwd=root,
                                        capture_output=True, text=True, check=True).stdout.split()
    driver = run()  # a cold cache: the clean dataset is read (scikit-learn) and the weak data made
    worker = run()
    assert driver[1] == "True" and worker == [driver[0], "False"], (driver, worker)
