"""An interrupted study continues with ``--resume``; failing trials are recorded, not fatal.

The driver runs as a subprocess through ``weaklab.cli.main`` (what ``weaklab run`` and
``python -m studies.NAME`` call), on a tiny study registered by a small driver script:
6 trials, 2 of which diverge (``train.lr=1e30``: the loss becomes NaN, the engine raises).
It is killed with SIGKILL (its whole process group, Ray's local processes included) once
some trials are in Parquet and Tune's saved state lags a running trial by 2 epochs, then
run again with ``--resume``; then its experiment state is truncated and ``--resume`` must
say how to start afresh.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = "ft-tiny-resume"
EPOCHS = 10
N_TRIALS = 6

DRIVER = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {ROOT!r})
    from studies import Arm, Study, register_study

    register_study(Study(
        name={STUDY!r}, title="resume test study", reproduces="(test)", setting="noise",
        fixed={{"setting.protocol": "heteroscedastic", "train.arch": "mlp", "train.width": 0.25,
               "train.batch_size": 16, "train.epochs": {EPOCHS}, "train.patience": 0}},
        arms=(Arm("homoscedastic", grid={{"train.lr": (1e-3, 2e-3, 1e30)}}),), seeds=2, metric="best_val_acc"))

    from weaklab.cli import main
    sys.exit(main(["run", {STUDY!r}, "--no-report", *sys.argv[1:]]))
""")


def _driver(tmp_path, *args, env=None):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "1", **(env or {})}
    # a checkpoint every epoch: this test resumes a trial from the newest of several
    # checkpoints after Tune's saved state has fallen behind them
    cmd = [sys.executable, str(script), "--results", str(tmp_path / "results"), "--checkpoint-every-s", "0", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _experiment_state(tmp_path) -> tuple[str, bytes, dict[str, tuple[str, int]]] | None:
    """(path, bytes, {trial_id: (status, last epoch Tune knows)}) of Tune's newest
    experiment state file, or None while there is none (or it is being rewritten)."""
    paths = glob.glob(os.path.join(tmp_path, "results", "_tune", STUDY, "experiment_state-*.json"))
    if not paths:
        return None
    path = max(paths)
    try:
        with open(path, "rb") as f:
            data = f.read()
        trials = {}
        for meta, run in json.loads(data)["trial_data"]:
            meta, run = json.loads(meta), json.loads(run)
            trials[meta["trial_id"]] = (meta["status"], int((run.get("last_result") or {}).get("epoch", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path, data, trials


def _stored(study_dir: str) -> dict[str, bytes]:
    out = {}
    for path in glob.glob(os.path.join(study_dir, "trials", "*.parquet")):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


def _rows(study_dir: str) -> pd.DataFrame:
    files = sorted(glob.glob(os.path.join(study_dir, "trials", "*.parquet")))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _finish(proc, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"driver did not finish in {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


@pytest.mark.slow
def test_killed_driver_resumes_without_duplicates_and_corrupt_state_is_clear(tmp_path):
    study_dir = str(tmp_path / "results" / STUDY)

    # 1. run, and kill the driver (and the Ray it started) once 2 trials are in Parquet and
    #    a running trial is 2 epochs past a saved experiment state. Tune saves that state
    #    only every 10 s or more, so a crashed driver's last state usually lags its trials,
    #    naming checkpoints that num_to_keep=1 has deleted since. That lag is made exact
    #    here: Tune saves at every step (TUNE_GLOBAL_CHECKPOINT_S=0), the test keeps the
    #    state it saw when the trial was at epoch e, and puts it back after the kill.
    proc = _driver(tmp_path, env={"TUNE_GLOBAL_CHECKPOINT_S": "0"})
    deadline, snapshot, lagging = time.monotonic() + 600, None, None
    while time.monotonic() < deadline and proc.poll() is None:
        state, stored = _experiment_state(tmp_path), {os.path.splitext(n)[0] for n in _stored(study_dir)}
        if state is None or len(stored) < 2:
            time.sleep(0.02)
            continue
        if snapshot is None:
            running = [t for t, (status, epoch) in state[2].items() if status == "RUNNING" and epoch >= 1
                       and t not in stored]
            if running:
                snapshot, lagging = state, running[0]
        elif state[2][lagging][1] >= snapshot[2][lagging][1] + 2 or lagging in stored:
            break
        time.sleep(0.02)
    assert proc.poll() is None and snapshot, (
        "the study ended before it could be interrupted:\n" + proc.communicate()[1][-3000:])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    before = _stored(study_dir)
    before_rows = _rows(study_dir)
    assert 2 <= len(before) < N_TRIALS
    with open(snapshot[0], "wb") as f:  # the state of a driver that died epochs ago
        f.write(snapshot[1])
    lag = f"{lagging} at epoch {snapshot[2][lagging][1]} in the state"

    # 2. --resume runs what is missing and leaves one row per trial
    rc, out, err = _finish(_driver(tmp_path, "--resume", env={"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}), timeout=600)
    assert rc == 0, f"--resume failed:\n{out[-3000:]}\n{err[-3000:]}"
    rows = _rows(study_dir)
    assert len(rows) == N_TRIALS and rows["trial_id"].is_unique, rows[["trial_id", "status"]]
    # trials stored before the kill keep their results (Tune may hand one whose state it
    # saved as running back to the trainable: it resumes from its last checkpoint, trains
    # nothing, reports the same history)
    same = ["trial_id", "status", "epochs", "best_epoch", "final.val_acc", "best.val_acc", "error"]
    after_rows = rows.set_index("trial_id").loc[before_rows["trial_id"]].reset_index()
    pd.testing.assert_frame_equal(after_rows[same], before_rows[same], check_dtype=False)
    rerun = sum(1 for k in before if _stored(study_dir)[k] != before[k])
    epochs = pd.read_parquet(os.path.join(study_dir, "epochs"))
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    # the lagging trial continued from a checkpoint (the newest one left), not from epoch 1
    [result_json] = [p for p in glob.glob(os.path.join(tmp_path, "results", "_tune", STUDY, "*", "result.json"))
                     if lagging in p]
    with open(result_json) as f:
        restored = [r for r in map(json.loads, filter(str.strip, f)) if r["weaklab"]["restored"]]
    assert restored and restored[0]["epoch"] > 1, [r["epoch"] for r in restored]
    assert rows.set_index("trial_id").loc[lagging, "status"] == "completed"

    # 3. the diverging trials are failed with their error; the rest completed all epochs
    diverged = rows["train.lr"] > 1
    assert (rows.loc[diverged, "status"] == "failed").all() and diverged.sum() == 2
    assert rows.loc[diverged, "error"].str.contains("FloatingPointError.*nan", regex=True).all(), rows["error"]
    ok = rows[~diverged]
    assert (ok["status"] == "completed").all() and (ok["epochs"] == EPOCHS).all()
    assert (epochs[epochs["trial_id"].isin(ok["trial_id"])].groupby("trial_id")["epoch"].nunique() == EPOCHS).all()
    print(f"\nresume test: killed with {len(before)}/{N_TRIALS} trials stored, {lag}; --resume finished "
          f"{sum(ln.startswith('[') for ln in out.splitlines())} ({rerun} of them stored already, re-reported from "
          f"their final checkpoint); {len(rows)} trial rows ({int(diverged.sum())} failed, "
          f"{int(rows['retries'].sum())} retries), {len(epochs)} epoch rows")

    # 4. a truncated experiment state: a one-line error saying how to start afresh
    states = glob.glob(os.path.join(tmp_path, "results", "_tune", STUDY, "experiment_state-*.json"))
    assert states, os.listdir(os.path.join(tmp_path, "results", "_tune", STUDY))
    for path in states:
        with open(path, "r+b") as f:
            f.truncate(max(1, os.path.getsize(path) // 2))
    rc, out, err = _finish(_driver(tmp_path, "--resume"), timeout=400)
    assert rc == 2, f"rc={rc}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err
    message = [ln for ln in err.splitlines() if ln.startswith("weaklab: error:")]
    assert len(message) == 1 and "--resume" in message[0] and "without --resume" in message[0], err[-2000:]
