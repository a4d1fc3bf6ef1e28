"""Resume across a two-stage method's stage switch, the riskiest path of a checkpoint: a run
interrupted after any epoch on either side of the switch (the last first-stage epoch, whose
end re-initialises the network or resets the optimizer, the first and second epochs of
stage two) and resumed from that checkpoint gives the uninterrupted run's history exactly.
PLOT (paper 003: DLLP then Algorithm 1, the student from the teacher or from scratch) and
pll-reg (paper 001 sec. 3.1: the prior-estimation stage, then the network restarted or
kept); and PLOT from a loaded teacher, whose start (``begin``) a resume must not repeat."""

import pytest

from studies import STUDIES, expand, resolve
from weaklab.engine import run_trial

TIMING = ("epoch_s", "epoch_cpu_s", "method_s", "train_s", "samples_per_s", "ot_s", "label_update_s",
          "prior_update_s")
SWITCH, EPOCHS = 2, 5  # the last first-stage epoch (1-based) and the run's length


def _strip(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def _plot(student_init: str) -> dict:
    cfg = next(c for c in expand(resolve(STUDIES.get("llp-bag-size"), smoke=True)) if c["method"] == "plot")
    # mixup draws from the method's own Generator, soft labels average the last T OT plans
    return {**cfg, "hp.stage1_epochs": SWITCH, "hp.student_init": student_init, "hp.mixup": True,
            "hp.labels": "soft", "hp.avg_last": 2, "train.epochs": EPOCHS, "train.patience": 0}


def _pll_reg(reinit: bool) -> dict:
    cfg = next(c for c in expand(resolve(STUDIES.get("pll-lambda-m"), smoke=True)) if c["method"] == "pll-reg")
    return {**cfg, "hp.pre_epochs": SWITCH, "hp.reinit": reinit, "train.epochs": EPOCHS, "train.patience": 0}


def _resumed_after(cfg: dict, stop: int, ckpt) -> list:
    """The history of ``cfg`` interrupted right after the checkpoint of epoch ``stop``, then
    resumed from it (the node dies after that checkpoint)."""
    def interrupt(history, save, last):
        if history[-1]["epoch"] == stop:
            save(str(ckpt))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, on_epoch=interrupt)
    return _strip(run_trial(cfg, restore=str(ckpt)).history)


CASES = {"plot-teacher": lambda: _plot("teacher"), "plot-scratch": lambda: _plot("scratch"),
         "pll-reg-reinit": lambda: _pll_reg(True), "pll-reg-kept": lambda: _pll_reg(False)}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_on_each_side_of_the_stage_switch_is_bit_identical(case, tmp_path):
    cfg = CASES[case]()
    full = _strip(run_trial(cfg).history)
    assert len(full) == EPOCHS
    for stop in (SWITCH - 1, SWITCH, SWITCH + 1):
        resumed = _resumed_after(cfg, stop, tmp_path / f"after-{stop}")
        assert resumed == full, f"{case}: resumed after epoch {stop} differs from the uninterrupted run"


@pytest.mark.parametrize("student_init", ["teacher", "scratch"])
def test_plot_from_a_loaded_teacher_resumes_without_starting_again(student_init, tmp_path):
    teacher_dir = tmp_path / "teacher"
    dllp = next(c for c in expand(resolve(STUDIES.get("llp-bag-size"), smoke=True)) if c["method"] == "dllp")
    run_trial({**dllp, "train.epochs": 2}, on_epoch=lambda h, save, last: save(str(teacher_dir)) if last else None)
    cfg = {**_plot(student_init), "hp.stage1_epochs": 0, "hp.stage1_checkpoint": str(teacher_dir), "train.epochs": 3}
    full = _strip(run_trial(cfg).history)
    for stop in (1, 2):
        assert _resumed_after(cfg, stop, tmp_path / f"after-{stop}") == full, f"resumed after epoch {stop} differs"
