"""Studies on a multi-node Ray cluster, simulated on one machine with ``ray.cluster_utils``.

The cluster: a head with 0 CPUs (it runs the Tune driver only, as in cluster.yaml) and two
worker nodes with 1 CPU and 1 declared GPU each (GPUs they do not have: the engine must
fall back to the CPU). Checked: ``preflight`` against the live cluster; a study whose
trials spread over both workers; and a worker removed mid-study, whose running trial
resumes from its last checkpoint on the other worker, with every trial in Parquet once.

Also the preflight checks that need no cluster (address, storage, node-type resources).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import threading
import time

import pytest

from weaklab.registry import ConfigError

TINY = "ft-tiny-multinode"
EPOCHS = 16  # long enough that the killer catches a trial mid-run on a fast machine


# -- preflight without a cluster ---------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_is_a_one_line_error_not_a_hang():
    from weaklab.tune.cluster import check_address

    port = _free_port()  # nothing listens there now
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"--address='127.0.0.1:{port}' is not reachable") as e:
        check_address(f"127.0.0.1:{port}", timeout=2.0)
    assert time.monotonic() - t0 < 30  # not Ray's own retry loop (minutes)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        check_address("127.0.0.1:notaport")


def test_cli_unreachable_address_exits_2_with_one_line(tmp_path, capsys):
    from weaklab.cli import main

    port = _free_port()
    rc = main(["run", "tau-sweep", "--smoke", "--no-report", "--results", str(tmp_path),
               "--address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err == [f"weaklab: error: --address='127.0.0.1:{port}' is not reachable (Connection refused): is the "
                   f"cluster up (`ray status` on the head) and the port open from here?"]


def test_address_auto_needs_a_cluster_on_this_machine(monkeypatch):
    import ray._private.services as services

    from weaklab.tune.cluster import check_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def nothing_running(addr, temp_dir=None):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(services, "canonicalize_bootstrap_address", nothing_running)
    with pytest.raises(ConfigError, match=r"--address=auto .*no Ray cluster was started on this machine"):
        check_address("auto")
    # a stale record of a stopped cluster: found, but nothing answers
    port = _free_port()
    monkeypatch.setattr(services, "canonicalize_bootstrap_address", lambda addr, temp_dir=None: f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="does not answer"):
        check_address("auto", timeout=2.0)
    assert check_address(None) is None and check_address("local") is None


def test_storage_that_cannot_be_opened_or_created(tmp_path, monkeypatch):
    import pyarrow
    import pyarrow.fs

    from weaklab.tune.cluster import check_storage

    check_storage(str(tmp_path / "new" / "tune"))  # created
    assert (tmp_path / "new" / "tune").is_dir()
    check_storage(f"file://{tmp_path}/uri")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"--storage=.*cannot create the folder"):
        check_storage(str(blocker / "tune"))
    with pytest.raises(ConfigError, match=r"--storage='s4://bucket/x' is not allowed: pyarrow cannot open it"):
        check_storage("s4://bucket/x")

    class WithoutS3:  # what a pyarrow built without S3 raises (no AWS is contacted here)
        @staticmethod
        def from_uri(uri):
            raise pyarrow.lib.ArrowNotImplementedError("Got S3 URI but Arrow compiled without S3 support")

    monkeypatch.setattr(pyarrow.fs, "FileSystem", WithoutS3)
    with pytest.raises(ConfigError, match=r"--storage='s3://b/p' is not allowed: this pyarrow cannot open s3://"):
        check_storage("s3://b/p")


def test_resources_no_node_type_can_offer():
    import yaml
    from ray.autoscaler._private.util import prepare_config

    from weaklab.tune.cluster import check_resources, node_type_offers

    with open(os.path.join(os.path.dirname(__file__), "..", "cluster.yaml")) as f:
        types = node_type_offers(prepare_config(yaml.safe_load(f)))
    assert {label for label, _ in types} == {"node type gpu1", "node type gpu4"}  # not the CPU-0 head
    head_only = [("node 10.0.0.1 (head)", {"CPU": 0.0})]
    # the autoscaler can start a 4-GPU node, so 4 GPUs per trial are feasible though no worker is up yet
    check_resources(cpus_per_trial=4, gpus_per_trial=4, offers=head_only + types)
    check_resources(cpus_per_trial=8, gpus_per_trial=0.25, offers=head_only + types)
    with pytest.raises(ConfigError, match=r"--gpus-per-trial=8 is not allowed on this cluster: the most GPUs one "
                                          r"node offers is 4"):
        check_resources(cpus_per_trial=1, gpus_per_trial=8, offers=head_only + types)
    with pytest.raises(ConfigError, match=r"--cpus-per-trial=64 is not allowed"):
        check_resources(cpus_per_trial=64, gpus_per_trial=1, offers=head_only + types)
    with pytest.raises(ConfigError, match=r"--cpus-per-trial=16 with --gpus-per-trial=2 .*no single node offers both"):
        check_resources(cpus_per_trial=16, gpus_per_trial=2, offers=[("a", {"CPU": 48, "GPU": 1}),
                                                                      ("b", {"CPU": 8, "GPU": 4})])
    with pytest.raises(ConfigError, match=r"--gpus-per-trial=0.5 .*no node has a GPU"):
        check_resources(cpus_per_trial=1, gpus_per_trial=0.5, offers=head_only + [("w", {"CPU": 2})])


# -- the multi-node cluster --------------------------------------------------------------

def _tiny_study():
    from studies import Arm, Study

    return Study(
        name=TINY, title="fault-tolerance test study", reproduces="(test)", setting="noise",
        fixed={"setting.protocol": "heteroscedastic", "train.arch": "mlp", "train.width": 0.25,
               "train.batch_size": 64, "train.epochs": EPOCHS, "train.patience": 0, "train.amp": False},
        arms=(Arm("homoscedastic", grid={"train.lr": (1e-3, 2e-3)}),), seeds=2, metric="best.val_acc")


@pytest.fixture(scope="module")
def tiny_study():
    from studies import STUDIES, register_study

    register_study(_tiny_study())
    yield TINY
    STUDIES._items.pop(TINY, None)  # keep the registry as other tests expect it


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    was_local = ray.is_initialized()  # the session's ray_local fixture, if a test used it before
    if was_local:
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    c.wait_for_nodes()
    c.weaklab_workers = workers
    yield c
    ray.shutdown()
    c.shutdown()
    if was_local:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)


def test_preflight_against_live_cluster(cluster, tmp_path):
    from weaklab.tune.cluster import preflight

    kw = dict(address=cluster.address, storage=str(tmp_path / "tune"))
    preflight(**kw, cpus_per_trial=1, gpus_per_trial=0.5)  # fits a worker; all nodes on one host: local storage ok
    preflight(**kw, cpus_per_trial=1, gpus_per_trial=1)
    with pytest.raises(ConfigError, match=r"--gpus-per-trial=2 is not allowed on this cluster: the most GPUs one node "
                                          r"offers is 1"):
        preflight(**kw, cpus_per_trial=1, gpus_per_trial=2)
    with pytest.raises(ConfigError, match=r"--cpus-per-trial=2 is not allowed on this cluster"):
        preflight(**kw, cpus_per_trial=2, gpus_per_trial=0)


def _progress(trial_dir: str) -> tuple[int, int | None]:
    """(epochs reported so far, pid of the actor that reported the latest) of a trial."""
    try:
        with open(os.path.join(trial_dir, "result.json")) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
        return len(lines), json.loads(lines[-1])["pid"]
    except (OSError, ValueError, IndexError, KeyError):
        return 0, None


def _kill_a_busy_worker(cluster, exp_dir: str, done: threading.Event, report: dict) -> None:
    """Once a trial has reported (and checkpointed) 2 epochs and has several to go, remove
    the node its actor runs on (the actor's pid looked up in the GCS actor table)."""
    import ray._private.state

    deadline = time.monotonic() + 240
    while not done.is_set() and time.monotonic() < deadline:
        for trial_dir in sorted(glob.glob(os.path.join(exp_dir, "*"))):
            reported, pid = _progress(trial_dir)
            # early in the trial: finding and removing the node takes a second or two, in which a
            # trial near its end could finish and leave nothing to resume
            if not 2 <= reported <= 4:
                continue
            node_id = next((a["Address"]["NodeID"] for a in ray._private.state.actors().values()
                            if a.get("Pid") == pid and a["State"] == "ALIVE"), None)
            node = next((n for n in cluster.weaklab_workers if n.node_id == node_id), None)
            if node is None:
                continue
            cluster.remove_node(node, allow_graceful=False)
            # a lost machine takes its processes with it; on one host the orphaned worker would
            # otherwise run on until it notices its raylet is gone (a tiny trial may finish first)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            report.update(node_id=node_id, trial_dir=os.path.basename(trial_dir), at_epoch=reported)
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_worker_lost_mid_study_trials_resume_on_other_node(cluster, tiny_study, tmp_path, monkeypatch):
    import pandas as pd
    import ray._private.state

    # Tune's result.json per trial (the runner turns it off) lets this test follow the trials
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")

    from weaklab.store import load_study
    from weaklab.tune.runner import run_study

    storage = str(tmp_path / "tune")
    exp_dir = os.path.join(storage, tiny_study)
    done, report = threading.Event(), {}
    killer = threading.Thread(target=_kill_a_busy_worker, args=(cluster, exp_dir, done, report), daemon=True)
    killer.start()
    try:
        study_dir = run_study(tiny_study, results=str(tmp_path / "results"), storage=storage,
                              address=cluster.address, cpus_per_trial=1, gpus_per_trial=0.5,
                              max_failures=2, verbose=False,
                              # a checkpoint per epoch, so the lost trial has one to resume from;
                              # one process per trial, so an actor's pid names one trial
                              checkpoint_every_s=0, reuse_actors=False)
    finally:
        done.set()
        killer.join(timeout=30)
    assert report, "no worker was removed while a trial ran: the study finished too fast to test failure"

    trials, epochs = load_study(study_dir)
    # every trial once, all completed, though a node died under one of them
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert (trials["epochs"] == EPOCHS).all()
    # ... with every epoch stored exactly once
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id")["epoch"].apply(sorted) == pd.Series(
        {t: list(range(1, EPOCHS + 1)) for t in trials["trial_id"]})).all()
    # declared GPUs that do not exist: Ray gave each trial half a "GPU", the engine used the CPU
    assert (trials["device"] == "cpu").all() and (trials["gpu_fraction"] == 0.5).all()

    # the interrupted trial was retried, and resumed from its checkpoint, not from epoch 1
    with open(os.path.join(exp_dir, report["trial_dir"], "result.json")) as f:
        results = [json.loads(line) for line in f if line.strip()]
    restored = [r for r in results if r["weaklab"]["restored"]]
    assert restored, ("the interrupted trial never reported again: "
                      + str([(r["epoch"], r["pid"], r["weaklab"]["restored"]) for r in results])
                      + f" retries={trials['retries'].tolist()} report={report}")
    assert restored[0]["epoch"] > 1, f"restarted from scratch, not from its checkpoint: {restored[0]['epoch']}"
    row = trials.set_index("trial_id").loc[restored[0]["trial_id"]]
    assert row["retries"] >= 1 and row["status"] == "completed"
    retried_on = {a["Address"]["NodeID"] for a in ray._private.state.actors().values() if a["Pid"] == restored[0]["pid"]}
    assert retried_on and report["node_id"] not in retried_on  # on the surviving worker

    print(f"\nnode-failure test: {len(trials)} trials, {int((trials['status'] == 'failed').sum())} failed, "
          f"retries {int(trials['retries'].sum())}, worker removed after epoch {report['at_epoch']}, "
          f"resumed at epoch {restored[0]['epoch']}, {len(trials)} trial rows and {len(epochs)} epoch rows in Parquet")

    # the trials were spread: trainable actors ran on both workers, none on the 0-CPU head
    trainable_nodes = {a["Address"]["NodeID"] for a in ray._private.state.actors().values()
                       if a["ActorClassName"].endswith(("ImplicitFunc", "Trainable"))}
    workers = {n.node_id for n in cluster.weaklab_workers}
    assert trainable_nodes == workers, (trainable_nodes, workers, {a["ActorClassName"] for a in
                                                                   ray._private.state.actors().values()})
