"""Results and Tune state on a real S3 API: moto's standalone server, started here.

The server runs with IAM authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``: the first
requests, which create the bucket and a user's access key, are free; every later one
must be signed by a known key), so missing and wrong credentials are refused as S3
would. Checked: a select-then-seeds study with ``--results`` and ``--storage`` on the
bucket, its driver killed in the final phase and resumed (``_has_state`` must find the
final phase's state on S3), one row per trial; ``pd.read_parquet("s3://...")``; the
report read from the bucket; and the bad inputs, each one line naming ``--results``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.test_resume import (driver, experiment_state, finish, kill_when_state_lags, newest_checkpoint_epoch,
                               put_back, restored_epochs, trial_folder)
from weaklab import store
from weaklab.cli import main

BUCKET = "weaklab-results"
EPOCHS = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server with a bucket and one IAM user's key; yields the client env."""
    boto3 = pytest.importorskip("boto3")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("moto server did not start")
                time.sleep(0.2)
        boot = dict(endpoint_url=endpoint, aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap",
                    region_name="us-east-1")
        boto3.client("s3", **boot).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="weaklab")
        iam.put_user_policy(UserName="weaklab", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="weaklab")["AccessKey"]
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"], "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for k, v in s3_server.items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.mark.slow
def test_study_on_s3_killed_in_its_final_phase_resumes_and_reports(s3_env, tmp_path, monkeypatch, capsys):
    from weaklab.tune.runner import RunOptions, _has_state

    study, results = "ft-s3-select", f"s3://{BUCKET}/runs"
    storage, study_dir = f"{results}/tune", f"{results}/{study}"
    fs, tune_root = store.filesystem(storage)
    exp_path = f"{tune_root}/{study}-final"
    # select: 2 trials (two lrs at seed 0; an arm with one grid point skips the select
    # phase); final: 3 seeds at the chosen lr, 2 at a time on 2 CPUs
    kw = dict(study=study, lrs=(1e-3, 2e-3), seeds=3, select=True, results=results, epochs=EPOCHS)
    t0 = time.perf_counter()
    proc = driver(tmp_path, "--storage", storage, env={**s3_env, "TUNE_GLOBAL_CHECKPOINT_S": "0"}, **kw)
    # the select trial is stored before the final phase's state exists
    snapshot, lagging = kill_when_state_lags(proc, fs, exp_path, study_dir, min_stored=2, epochs=EPOCHS)
    killed_s = time.perf_counter() - t0
    before = store.load_study(study_dir)[0]
    assert (before["phase"] == "select").sum() == 2 and len(before) < 5 and lagging not in set(before["trial_id"])
    put_back(fs, snapshot[0], snapshot[1])
    trial_path = trial_folder(fs, exp_path, lagging)
    resume_from = newest_checkpoint_epoch(fs, trial_path)
    assert _has_state(RunOptions(results=results, storage=storage), f"{study}-final")
    assert not _has_state(RunOptions(results=results, storage=storage), f"{study}-other")

    t1 = time.perf_counter()
    rc, out, err = finish(driver(tmp_path, "--resume", "--storage", storage,
                                 env={**s3_env, "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "0"}, **kw), timeout=600)
    resumed_s = time.perf_counter() - t1
    assert rc == 0, f"--resume failed:\n{out[-3000:]}\n{err[-3000:]}"
    rows, epochs = store.load_study(study_dir)
    assert rows["trial_id"].is_unique and rows["phase"].value_counts().to_dict() == {"final": 3, "select": 2}
    assert (rows["status"] == "completed").all() and (rows["epochs"] == EPOCHS).all()
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 5 * EPOCHS
    restored = restored_epochs(fs, trial_path)
    assert restored and restored[0] == resume_from + 1, (lagging, resume_from, restored)
    # any Parquet reader with S3 access opens the folder whole
    assert len(pd.read_parquet(f"{study_dir}/trials")) == 5

    monkeypatch.chdir(tmp_path)
    assert main(["report", study_dir]) == 0
    report = tmp_path / "reports" / study / "report.md"
    assert report.exists() and f"Source: `{study_dir}`" in report.read_text()
    with capsys.disabled():
        print(f"\ns3 test: killed at {killed_s:.0f} s with {len(before)}/5 trials stored "
              f"({lagging} at checkpoint {snapshot[2][lagging][2]} in the kept state, epoch {resume_from} in its newest "
              f"checkpoint); --resume took {resumed_s:.0f} s, restored it at epoch {restored[0]}; "
              f"{len(rows)} trial rows, {len(epochs)} epoch rows on s3; report from s3: {report}")


@pytest.mark.parametrize("case", ["missing bucket", "wrong credentials", "missing credentials", "unreachable"])
def test_unusable_results_uri_is_one_line_before_ray(case, s3_env, monkeypatch, capsys):
    import weaklab.tune.runner as runner

    uri = f"s3://{'no-such-bucket' if case == 'missing bucket' else BUCKET}/runs"
    if case == "wrong credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    if case == "missing credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    if case == "unreachable":
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    started = []
    monkeypatch.setattr(runner, "_init_ray", lambda opts: started.append(opts))
    assert main(["run", "tau-sweep", "--smoke", "--results", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("weaklab: error: --results=") and uri in err and "\n" not in err, err
    assert started == []
    with capsys.disabled():
        print(f"\n{case}: {err}")
