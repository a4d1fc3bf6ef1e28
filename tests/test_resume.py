"""An interrupted study continues with ``--resume``; failing trials are recorded, not fatal.

The driver runs as a subprocess through ``weaklab.cli.main`` (what ``weaklab run`` and
``python -m studies.NAME`` call), on a tiny study registered by a small driver script:
6 trials, 2 of which diverge (``train.lr=1e30``: the loss becomes NaN, the engine raises).
It is killed with SIGKILL (the driver and every process it started, Ray's trial workers
included, frozen first so nothing runs on past the kill) at a point read from the stored
state, never from elapsed time: once 2 trials are in Parquet
and a running trial's registered checkpoint is 2 past the one a saved experiment state
names. That state is put back, so ``--resume`` starts from a state that lags the trial's
checkpoints, as a crashed driver's does. Then its experiment state is truncated and
``--resume`` must say how to start afresh.

The helpers work on any ``pyarrow.fs`` location; ``tests/test_s3.py`` runs the same kill
and resume against an S3 server.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pyarrow.fs as pafs
import pytest

from weaklab import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = "ft-tiny-resume"
EPOCHS = 10
N_TRIALS = 6

DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from studies import Arm, Study, register_study

    register_study(Study(
        name={study!r}, title="resume test study", reproduces="(test)", setting="noise",
        fixed={{"setting.protocol": "heteroscedastic", "train.arch": "mlp", "train.width": 0.25,
               "train.batch_size": 16, "train.epochs": {epochs}, "train.patience": 0}},
        arms=(Arm("homoscedastic", grid={{"train.lr": {lrs!r}}}),), seeds={seeds}, metric="best.val_acc",
        select_then_seeds={select!r}))

    from weaklab.cli import main
    sys.exit(main(["run", {study!r}, "--no-report", *sys.argv[1:]]))
""")


def driver(tmp_path, *args, env=None, study=STUDY, lrs=(1e-3, 2e-3, 1e30), seeds=2, select=False,
           results=None, epochs=EPOCHS):
    """The study's driver as a subprocess in its own process group (a checkpoint every
    epoch: this test resumes a trial from the newest of several checkpoints)."""
    script = tmp_path / f"driver-{study}.py"
    script.write_text(DRIVER.format(root=ROOT, study=study, epochs=epochs, lrs=lrs, seeds=seeds, select=select))
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "1", **(env or {})}
    cmd = [sys.executable, str(script), "--results", results or str(tmp_path / "results"),
           "--checkpoint-every-s", "0", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it (from /proc's parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += parents.get(pid, [])
    return out


def kill_tree(proc) -> None:
    """SIGKILL the driver and every process it started, at one instant. Ray runs each
    trial in a worker with its own process group, so killing the driver's group alone
    left the trial training and writing checkpoints until it noticed (the kill point then
    depended on timing). The tree is frozen first (SIGSTOP, until no new process
    appears), then killed: nothing writes after the kill point."""
    frozen: set[int] = set()
    while new := _descendants(proc.pid) - frozen:
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        frozen |= new
    for pid in frozen:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.communicate()


def _listing(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def experiment_state(fs: pafs.FileSystem, exp_path: str):
    """(path, bytes, {trial_id: (status, last epoch, newest registered checkpoint index or
    None)}) of Tune's newest experiment state, or None while there is none (or it is being
    rewritten)."""
    paths = sorted(i.path for i in _listing(fs, exp_path)
                   if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    if not paths:
        return None
    try:
        data = _read(fs, paths[-1])
        trials = {}
        for meta, run in json.loads(data)["trial_data"]:
            meta, run = json.loads(meta), json.loads(run)
            # the checkpoint manager is pickled; the checkpoint folder names are plain in it
            pickled = bytes.fromhex((run.get("checkpoint_manager") or {}).get("value", ""))
            found = [int(i) for i in re.findall(rb"checkpoint_(\d{6})", pickled)]
            trials[meta["trial_id"]] = (meta["status"], int((run.get("last_result") or {}).get("epoch", 0)),
                                        max(found) if found else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return paths[-1], data, trials


def kill_when_state_lags(proc, fs: pafs.FileSystem, exp_path: str, study_dir: str, *, min_stored: int,
                         epochs: int = EPOCHS):
    """Wait, reading only stored state, until ``min_stored`` trials are in Parquet and a
    running trial T (not in Parquet, at most ``epochs`` - 4 epochs in) has a checkpoint
    registered in the experiment state; keep that state; kill the driver's process group
    once the state registers T's checkpoint 2 later (T still running, so at least 2
    epochs are left). Returns (kept state, T). A T that ends before that (a starved
    test process) is dropped and another one picked."""
    snapshot, lagging = None, None
    while proc.poll() is None:
        state, stored = experiment_state(fs, exp_path), store.stored_trial_ids(study_dir)
        if state is None or len(stored) < min_stored:
            time.sleep(0.05)
            continue
        trials = state[2]
        if snapshot is not None:
            status, _, ckpt = trials.get(lagging, ("", 0, None))
            if status != "RUNNING" or lagging in stored:
                snapshot, lagging = None, None  # it ended unseen: pick another
            elif ckpt is not None and ckpt >= snapshot[2][lagging][2] + 2:
                kill_tree(proc)
                return snapshot, lagging
        if snapshot is None:
            candidates = [t for t, (status, epoch, ckpt) in trials.items()
                          if status == "RUNNING" and ckpt is not None and 1 <= epoch <= epochs - 4 and t not in stored]
            if candidates:
                snapshot, lagging = state, candidates[0]
        time.sleep(0.05)
    pytest.fail("the study ended before it could be interrupted at the planned point:\n"
                + proc.communicate()[1][-3000:])


def trial_folder(fs: pafs.FileSystem, exp_path: str, trial_id: str) -> str:
    [path] = [i.path for i in _listing(fs, exp_path) if i.type == pafs.FileType.Directory and trial_id in i.base_name]
    return path


def newest_checkpoint_epoch(fs: pafs.FileSystem, trial_path: str) -> int:
    """The epoch of the trial's newest checkpoint that loads (what a resume must start after)."""
    import torch

    from weaklab.engine import CHECKPOINT_FILE

    folders = sorted((i.path for i in _listing(fs, trial_path) if i.base_name.startswith("checkpoint_")), reverse=True)
    for folder in folders:
        try:
            return int(torch.load(io.BytesIO(_read(fs, f"{folder}/{CHECKPOINT_FILE}")), weights_only=True)["epoch"])
        except Exception:
            continue
    return 0


def restored_epochs(fs: pafs.FileSystem, trial_path: str) -> list[int]:
    """Epochs the trial reported after a restore from a checkpoint (Tune's result.json)."""
    text = _read(fs, f"{trial_path}/result.json").decode()
    return [r["epoch"] for r in map(json.loads, filter(str.strip, text.splitlines())) if r["weaklab"]["restored"]]


def put_back(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def finish(proc, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.stdout.read(), proc.stderr.read()
        pytest.fail(f"driver did not finish in {timeout} s:\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


def _trial_files(study_dir: str) -> dict[str, bytes]:
    fs, base = store.filesystem(study_dir)
    return {i.base_name: _read(fs, i.path) for i in _listing(fs, f"{base}/trials")}


@pytest.mark.slow
def test_killed_driver_resumes_without_duplicates_and_corrupt_state_is_clear(tmp_path):
    study_dir = str(tmp_path / "results" / STUDY)
    fs, exp_path = pafs.LocalFileSystem(), str(tmp_path / "results" / "_tune" / STUDY)

    # 1. run, and kill the driver at a point read from the stored state. Tune saves its
    #    state only every 10 s or more, so a crashed driver's last state usually lags its
    #    trials, naming checkpoints that num_to_keep=1 has deleted since. That lag is made
    #    exact here: Tune saves at every step (TUNE_GLOBAL_CHECKPOINT_S=0), the test keeps
    #    the state it saw at the lagging trial's checkpoint k, and puts it back after the kill.
    proc = driver(tmp_path, env={"TUNE_GLOBAL_CHECKPOINT_S": "0"})
    snapshot, lagging = kill_when_state_lags(proc, fs, exp_path, study_dir, min_stored=2)
    before = _trial_files(study_dir)
    before_rows = store.load_study(study_dir)[0]
    assert 2 <= len(before) < N_TRIALS and f"{lagging}.parquet" not in before
    put_back(fs, snapshot[0], snapshot[1])  # the state of a driver that died epochs ago
    trial_path = trial_folder(fs, exp_path, lagging)
    resume_from = newest_checkpoint_epoch(fs, trial_path)
    lag = (f"{lagging} at checkpoint {snapshot[2][lagging][2]} (epoch {snapshot[2][lagging][1]}) in the state, "
           f"epoch {resume_from} in its newest checkpoint")
    assert resume_from >= snapshot[2][lagging][1] + 2, lag

    # 2. --resume runs what is missing and leaves one row per trial
    rc, out, err = finish(driver(tmp_path, "--resume", env={"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}), timeout=600)
    assert rc == 0, f"--resume failed:\n{out[-3000:]}\n{err[-3000:]}"
    rows, epochs = store.load_study(study_dir)
    assert len(rows) == N_TRIALS and rows["trial_id"].is_unique, rows[["trial_id", "status"]]
    # trials stored before the kill keep their results (Tune may hand one whose state it
    # saved as running back to the trainable: it resumes from its last checkpoint, trains
    # nothing, reports the same history)
    same = ["trial_id", "status", "epochs", "best_epoch", "final.val_acc", "best.val_acc", "error"]
    after_rows = rows.set_index("trial_id").loc[before_rows["trial_id"]].reset_index()
    pd.testing.assert_frame_equal(after_rows[same], before_rows[same], check_dtype=False)
    rerun = sum(1 for k, v in _trial_files(study_dir).items() if k in before and v != before[k])
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    # the lagging trial continued right after its newest checkpoint, not from epoch 1 nor
    # from the deleted checkpoint the state named
    restored = restored_epochs(fs, trial_path)
    assert restored and restored[0] == resume_from + 1, (lag, restored)
    assert rows.set_index("trial_id").loc[lagging, "status"] == "completed"

    # 3. the diverging trials are failed with their error; the rest completed all epochs
    diverged = rows["train.lr"] > 1
    assert (rows.loc[diverged, "status"] == "failed").all() and diverged.sum() == 2
    assert rows.loc[diverged, "error"].str.contains("FloatingPointError.*nan", regex=True).all(), rows["error"]
    ok = rows[~diverged]
    assert (ok["status"] == "completed").all() and (ok["epochs"] == EPOCHS).all()
    assert (epochs[epochs["trial_id"].isin(ok["trial_id"])].groupby("trial_id")["epoch"].nunique() == EPOCHS).all()
    print(f"\nresume test: killed with {len(before)}/{N_TRIALS} trials stored, {lag}; --resume restored it at "
          f"epoch {restored[0]}, finished {sum(ln.startswith('[') for ln in out.splitlines())} trials ({rerun} of "
          f"them stored already, re-reported from their final checkpoint); {len(rows)} trial rows "
          f"({int(diverged.sum())} failed, {int(rows['retries'].sum())} retries), {len(epochs)} epoch rows")

    # 4. a truncated experiment state: a one-line error saying how to start afresh
    states = [i for i in _listing(fs, exp_path) if i.base_name.startswith("experiment_state-")]
    assert states
    for info in states:
        with open(info.path, "r+b") as f:
            f.truncate(max(1, info.size // 2))
    rc, out, err = finish(driver(tmp_path, "--resume"), timeout=400)
    assert rc == 2, f"rc={rc}\n{out[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err
    message = [ln for ln in err.splitlines() if ln.startswith("weaklab: error:")]
    assert len(message) == 1 and "--resume" in message[0] and "without --resume" in message[0], err[-2000:]


def test_resume_skips_a_checkpoint_cut_short_by_the_kill(tmp_path):
    """The resume defect behind the killed-driver test's rare failure: a driver killed while
    Tune copied a checkpoint into storage leaves a truncated file beside the trial's last
    complete one; restoring from it failed the trial. The newest checkpoint that was
    written whole is used instead."""
    import torch
    from ray import tune

    from weaklab.engine import CHECKPOINT_FILE
    from weaklab.tune.trainable import _newest_checkpoint

    trial = tmp_path / "trial"
    for i in (1, 2):
        (trial / f"checkpoint_00000{i}").mkdir(parents=True)
        torch.save({"epoch": i, "w": torch.zeros(1000)}, trial / f"checkpoint_00000{i}" / CHECKPOINT_FILE)
    newest = trial / "checkpoint_000002" / CHECKPOINT_FILE
    newest.write_bytes(newest.read_bytes()[:-100])  # the copy the kill cut short
    named = tune.Checkpoint(str(trial / "checkpoint_000000"))  # what the lagging state names: deleted
    chosen = _newest_checkpoint(named)
    assert chosen is not None and chosen.path.endswith("checkpoint_000001")
    newest.unlink()
    (trial / "checkpoint_000001" / CHECKPOINT_FILE).unlink()
    assert _newest_checkpoint(named) is None  # nothing whole left: the trial starts afresh
