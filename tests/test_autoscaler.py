"""cluster.yaml's autoscaling decisions, made by Ray's real autoscaler on its fake provider.

One twin of cluster.yaml (``weaklab.tune.fake_cluster``: same node types, Ray's fake
multi-node provider, worker counts x 1/4, a 15 s idle timeout) runs for the module:
``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=TWIN`` in a temporary folder of
its own, stopped (every process it started, nothing else) by the fixture's finalizer.
On it: a 4-trial study at ``--gpus-per-trial 0.25`` makes the autoscaler start one
``gpu1`` node (not ``gpu4``) that runs all 4 trials at once while the CPU-0 head runs none;
the node stops once idle; a spot reclaim of the node under a study is survived from
checkpoints on a replacement node; ``--gpus-per-trial 8`` fails in the preflight. Each
study runs under a time limit (SIGALRM), so a cluster that never scales fails, not hangs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import signal
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_YAML = os.path.join(ROOT, "cluster.yaml")
TINY = "ft-tiny-autoscaler"
SMOKE_EPOCHS = 3
RECLAIM_EPOCHS = 12  # long enough that the reclaim lands mid-trial, with epochs left to resume
STUDY_LIMIT_S = 480  # ~60 s on an idle 2-core machine, ~110 s at a load average of 30
HEAD_ID = "f" * 51 + "00000"  # the fake provider's fixed head node id

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def time_limit(seconds: int, what: str):
    """Raise TimeoutError in the main thread (e.g. inside Tune's loop) after ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"{what} took over {seconds} s (the fake cluster never scaled?)")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _tiny_study():
    from studies import Arm, Study

    return Study(
        name=TINY, title="autoscaler test study", reproduces="(test)", setting="noise",
        fixed={"setting.protocol": "heteroscedastic", "train.arch": "mlp", "train.width": 0.25,
               "train.batch_size": 64, "train.epochs": SMOKE_EPOCHS, "train.patience": 0, "train.amp": False},
        arms=(Arm("homoscedastic", grid={"train.lr": (1e-3, 2e-3)}),), seeds=2, metric="best.val_acc")


@pytest.fixture(scope="module")
def tiny_study():
    from studies import STUDIES, register_study

    register_study(_tiny_study())
    yield TINY
    STUDIES._items.pop(TINY, None)


@pytest.fixture(scope="module")
def fake():
    """The twin of cluster.yaml, running; every process it started is ended afterwards."""
    import ray

    from weaklab.tune import fake_cluster

    was_local = ray.is_initialized()  # the session's ray_local fixture, if a test used it before
    if was_local:
        ray.shutdown()
    t0 = time.monotonic()
    cluster = fake_cluster.start(CLUSTER_YAML, timeout_s=90)
    print(f"\nfake cluster up in {time.monotonic() - t0:.1f} s at {cluster.address} ({cluster.temp_dir})")
    meter = CpuMeter(cluster.temp_dir)
    old = os.environ.get("WEAKLAB_AUTOSCALER_CONFIG")
    os.environ["WEAKLAB_AUTOSCALER_CONFIG"] = cluster.twin_path  # what ~/ray_bootstrap_config.yaml is on `ray up`
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("WEAKLAB_AUTOSCALER_CONFIG", None)
        else:
            os.environ["WEAKLAB_AUTOSCALER_CONFIG"] = old
        ray.shutdown()
        print("autoscaler events:\n  " + "\n  ".join(cluster.scaling_events()))
        meter.close()
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        print(f"CPU: fake cluster's processes {meter.seconds():.0f} s (sampled each second), this test process "
              f"{own.ru_utime + own.ru_stime:.0f} s")
        cluster.stop()
        left = fake_cluster._marked_pids(cluster.temp_dir)
        if was_local:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        assert not left, f"processes of the fake cluster outlived stop(): {left}"


class CpuMeter:
    """CPU time (user+sys) of the fake cluster's processes, from /proc each second: the
    raylets reap their workers without counting them, so the parents' totals miss them."""

    def __init__(self, temp_dir: str):
        from weaklab.tune.fake_cluster import _marked_pids

        self.temp_dir, self._marked, self.ticks = temp_dir, _marked_pids, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self):
        for pid in self._marked(self.temp_dir):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.ticks[pid] = max(self.ticks.get(pid, 0), int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                pass

    def _run(self):
        while not self._stop.wait(1.0):
            self._sample()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()

    def seconds(self) -> float:
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")


class Watcher:
    """Polls the autoscaler's report while a study runs: which worker node has which type,
    and the most GPU in use on each node at once."""

    def __init__(self, cluster):
        self.cluster, self.types, self.gpu_peak = cluster, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                status = self.cluster.status()
            except Exception:  # the GCS is busy; poll again
                status = {}
            report = status.get("autoscaler_report") or {}
            self.types.update(report.get("node_type_mapping") or {})
            for node, usage in ((status.get("load_metrics_report") or {}).get("usage_by_node") or {}).items():
                used = (usage.get("GPU") or [0.0, 0.0])[0]
                self.gpu_peak[node] = max(self.gpu_peak.get(node, 0.0), used)
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def _adds(events: list[str]) -> list[str]:
    return re.findall(r"Adding \d+ node\(s\) of type (\S+)\.", "\n".join(events))


def _trainable_actors():
    import ray._private.state

    return [a for a in ray._private.state.actors().values()
            if a["ActorClassName"].endswith(("ImplicitFunc", "Trainable"))]


def _max_overlap(actors) -> int:
    """Most actors alive at once (StartTime/EndTime in ms; a live actor ends now)."""
    now = time.time() * 1000
    points = sorted([(a["StartTime"], 1) for a in actors if a["StartTime"]]
                    + [(a["EndTime"] or now, -1) for a in actors if a["StartTime"]])
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


@pytest.fixture(scope="module")
def smoke_run(fake, tiny_study, tmp_path_factory):
    """The 4-trial study at --gpus-per-trial 0.25, run once for the tests that check it."""
    from weaklab.tune.runner import run_study

    tmp = tmp_path_factory.mktemp("autoscaler-smoke")
    events_before = len(fake.scaling_events())
    t0 = time.monotonic()
    with Watcher(fake) as w, time_limit(STUDY_LIMIT_S, "the smoke study"):
        study_dir = run_study(tiny_study, results=str(tmp / "results"), storage=str(tmp / "tune"),
                              address=fake.address, cpus_per_trial=1, gpus_per_trial=0.25, verbose=False)
    ended = time.monotonic()
    print(f"\nsmoke study: {ended - t0:.1f} s, ended {time.strftime('%H:%M:%S')}; events:\n  "
          + "\n  ".join(fake.scaling_events()[events_before:]))
    return dict(study_dir=study_dir, types=dict(w.types), gpu_peak=dict(w.gpu_peak), ended=ended,
                events=fake.scaling_events()[events_before:], actors=_trainable_actors())


def test_running_twin_is_cluster_yaml_but_provider_and_scale(fake):
    import yaml

    from weaklab.tune.fake_cluster import SCALE, diff_from_cluster, load

    with open(fake.twin_path) as f:
        twin = yaml.safe_load(f)  # the file the autoscaler reads
    assert diff_from_cluster(twin, load(CLUSTER_YAML), scale=SCALE) == []


def test_gpu_quarter_trials_start_gpu1_pack_four_and_skip_head(smoke_run):
    from weaklab.store import load_study

    events = smoke_run["events"]
    assert _adds(events) == ["gpu1"], f"the autoscaler should start one gpu1 node (not gpu4): {events}"
    trials, epochs = load_study(smoke_run["study_dir"])
    # every trial in Parquet exactly once, each epoch once
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert not epochs.duplicated(["trial_id", "epoch"]).any() and len(epochs) == 4 * SMOKE_EPOCHS
    assert (trials["gpu_fraction"] == 0.25).all()
    # no trial on the head; all 4 on the one gpu1 node the autoscaler started
    nodes = set(trials["node_id"])
    assert HEAD_ID not in nodes
    assert len(nodes) == 1 and smoke_run["types"].get(next(iter(nodes))) == "gpu1", (nodes, smoke_run["types"])
    # packed: 4 trial processes alive together on it, its 1 GPU fully handed out (4 x 0.25)
    on_node = [a for a in smoke_run["actors"] if a["Address"]["NodeID"] in nodes]
    assert _max_overlap(on_node) == 4, [(a["StartTime"], a["EndTime"]) for a in on_node]
    assert smoke_run["gpu_peak"].get(next(iter(nodes))) == pytest.approx(1.0), smoke_run["gpu_peak"]
    assert all(a["Address"]["NodeID"] != HEAD_ID for a in _trainable_actors())


def test_idle_workers_stop_after_the_study(fake, smoke_run):
    from weaklab.tune.fake_cluster import wait_idle_stop

    waited = wait_idle_stop(fake, timeout_s=60)
    assert waited is not None, f"workers still up 60 s after the study: {fake.workers()}"
    since_end = time.monotonic() - smoke_run["ended"]
    events = fake.scaling_events()
    assert any(re.search(r"Removing 1 nodes of type gpu1 \(idle\)", e) for e in events), events
    print(f"\nworkers stopped {since_end:.1f} s after the study ended (idle timeout "
          f"{fake.config['idle_timeout_minutes'] * 60:g} s)")


def _progress(trial_dir: str) -> tuple[int, str | None]:
    """(epochs reported, node id of the latest report) of a trial, from Tune's result.json."""
    try:
        with open(os.path.join(trial_dir, "result.json")) as f:
            lines = [ln for ln in f.read().splitlines() if ln.strip()]
        return len(lines), json.loads(lines[-1])["weaklab"]["node_id"]
    except (OSError, ValueError, IndexError, KeyError):
        return 0, None


def _reclaim_busy_node(fake, exp_dir: str, done: threading.Event, report: dict) -> None:
    """Once a trial has checkpointed 2 epochs with many to go, reclaim the node it runs on."""
    deadline = time.monotonic() + 150
    while not done.is_set() and time.monotonic() < deadline:
        for trial_dir in sorted(glob.glob(os.path.join(exp_dir, "*"))):
            reported, node_id = _progress(trial_dir)
            if 2 <= reported <= RECLAIM_EPOCHS - 6 and node_id and node_id != HEAD_ID:
                killed = fake.reclaim(node_id)
                report.update(node_id=node_id, at_epoch=reported, pids=len(killed),
                              at=time.strftime("%H:%M:%S", time.localtime()))
                return
        time.sleep(0.2)


def test_spot_reclaim_mid_study_resumes_on_a_replacement_node(fake, tiny_study, tmp_path, monkeypatch):
    import pandas as pd

    from weaklab.store import load_study
    from weaklab.tune.runner import run_study

    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")  # result.json per trial, to follow them
    storage = str(tmp_path / "tune")
    events_before = len(fake.scaling_events())
    done, report = threading.Event(), {}
    killer = threading.Thread(target=_reclaim_busy_node, args=(fake, os.path.join(storage, tiny_study), done, report),
                              daemon=True)
    t0 = time.monotonic()
    killer.start()
    try:
        with Watcher(fake) as w, time_limit(STUDY_LIMIT_S, "the reclaimed study"):
            study_dir = run_study(tiny_study, results=str(tmp_path / "results"), storage=storage,
                                  sets={"train.epochs": RECLAIM_EPOCHS}, seeds=1, address=fake.address, cpus_per_trial=1,
                                  gpus_per_trial=0.25, max_failures=2, checkpoint_every_s=0, verbose=False)
    finally:
        done.set()
        killer.join(timeout=30)
    took = time.monotonic() - t0
    events = fake.scaling_events()[events_before:]
    assert report, f"no node was reclaimed while a trial ran: the study finished too fast ({took:.0f} s)"

    trials, epochs = load_study(study_dir)
    assert len(trials) == 2 and trials["trial_id"].is_unique
    assert (trials["status"] == "completed").all(), trials[["trial_id", "status", "error"]]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert (epochs.groupby("trial_id")["epoch"].apply(sorted) == pd.Series(
        {t: list(range(1, RECLAIM_EPOCHS + 1)) for t in trials["trial_id"]})).all()
    print(f"\nreclaim at {report['at']}:\n  " + "\n  ".join(events))
    # the autoscaler ended the reclaimed node and started another gpu1 for the retried trials
    assert any(f"SpotFakeProvider: node {report['node_id']} is gone" in e for e in events), events
    assert _adds(events) == ["gpu1", "gpu1"], events
    replacement = {n for n, t in w.types.items() if t == "gpu1"} - {report["node_id"]}
    assert len(replacement) == 1, w.types
    # every trial ended on the replacement; those hit by the reclaim resumed from a checkpoint
    assert set(trials["node_id"]) == replacement
    resumed = []
    for path in glob.glob(os.path.join(storage, tiny_study, "*", "result.json")):
        with open(path) as f:
            results = [json.loads(line) for line in f if line.strip()]
        restored = [r for r in results if r["weaklab"]["restored"]]
        if restored:
            assert restored[0]["epoch"] > 1, f"restarted from scratch, not from its checkpoint: {restored[0]['epoch']}"
            resumed.append(restored[0]["epoch"])
    assert resumed and int(trials["retries"].sum()) >= len(resumed)
    print(f"\nspot reclaim: node {report['node_id'][-5:]} ({report['pids']} processes) killed after epoch "
          f"{report['at_epoch']} of a trial; {len(resumed)} trials resumed at epochs {sorted(resumed)} on the "
          f"replacement {next(iter(replacement))[-5:]}; {len(trials)} trial rows, {len(epochs)} epoch rows, "
          f"retries {int(trials['retries'].sum())}; study {took:.1f} s\n  " + "\n  ".join(events))


def test_more_gpus_than_any_node_type_fails_before_any_trial(fake, tiny_study, tmp_path, capsys):
    from weaklab.cli import main

    events_before, actors_before = len(fake.scaling_events()), len(_trainable_actors())
    with time_limit(120, "the preflight"):
        rc = main(["run", tiny_study, "--no-report", "--results", str(tmp_path / "results"),
                   "--storage", str(tmp_path / "tune"), "--address", fake.address, "--gpus-per-trial", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(
        "weaklab: error: --gpus-per-trial=8 is not allowed on this cluster: the most GPUs one node offers is 4;"), err
    assert "node type gpu4: CPU=48 GPU=4" in err[0]
    time.sleep(2)  # an autoscaler update or two: no node is started for it
    assert len(fake.scaling_events()) == events_before
    assert len(_trainable_actors()) == actors_before
    assert not glob.glob(str(tmp_path / "results" / "**" / "*.parquet"), recursive=True)
    assert not os.path.exists(tmp_path / "tune" / tiny_study)


def test_rehearsal_rejects_a_bad_cluster_file_before_ray(tmp_path, capsys, monkeypatch):
    from weaklab.tune import fake_cluster

    def no_ray(*a, **k):
        raise AssertionError("reached `ray start` with a bad cluster file")

    monkeypatch.setattr(fake_cluster.subprocess, "run", no_ray)
    monkeypatch.setattr(fake_cluster.tempfile, "mkdtemp", no_ray)
    bad = tmp_path / "cluster.yaml"
    bad.write_text(open(CLUSTER_YAML).read().replace("resources: {CPU: 48, GPU: 4}", "resources: {GPU: 4}"))
    assert fake_cluster.rehearse([str(bad), TINY, "--smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "node type gpu4 cannot hold one trial" in err[0], err
