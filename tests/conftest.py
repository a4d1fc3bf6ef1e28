import os

import pytest
import torch

# 2-core CI machine: one torch thread per process keeps Ray's trial processes from
# oversubscribing the cores.
torch.set_num_threads(1)

# Ray's token authentication is process-wide state: once a local ray.init in this process
# has turned it on, a later driver connecting to the fake autoscaler cluster (started with
# auth disabled, tests/test_autoscaler.py) has its actors' creation cancelled. Every Ray
# instance the tests start, local or fake, runs without it (all on this machine).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


#: fixtures that start Ray (a local instance, a multi-node or autoscaler cluster): a test
#: using one, directly or through another fixture, runs Ray end to end
RAY_FIXTURES = {"ray_local", "cluster", "fake"}


def pytest_collection_modifyitems(config, items):
    """Mark ``slow`` every test that starts Ray, so ``-m "not slow"`` is the tier without
    it (every registry, every bad input, the engine and analysis on their own); tests that
    start a driver in a subprocess or reach Ray at run time carry the mark themselves."""
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Weak-data cache in a temporary folder, so tests never read a stale user cache."""
    os.environ["WEAKLAB_CACHE"] = str(tmp_path_factory.mktemp("weaklab-cache"))
    yield


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) shared by every test that runs a study."""
    import ray

    if not ray.is_initialized():
        # "local": a new instance even if a `ray start` cluster runs on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


#: options of a study's shared smoke run besides ``smoke=True``: tau-sweep's checkpoints
#: are throttled away (only the last epoch saves), so its end-to-end test also shows that
#: Parquet still holds every epoch without them
SMOKE_OPTIONS = {"tau-sweep": {"checkpoint_every_s": 1e6}}


@pytest.fixture(scope="session")
def smoke_study(ray_local, tmp_path_factory):
    """``smoke_study(name)``: the results folder of study ``name``'s ``--smoke`` run through
    Ray, run once per session and shared by the tests that only read it (the study's own
    end-to-end test, the reader matrix); a test that writes into a study folder makes its own."""
    from weaklab.tune.runner import run_study

    root = tmp_path_factory.mktemp("smoke-results")
    done: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in done:
            done[name] = run_study(name, smoke=True, results=str(root), verbose=False, **SMOKE_OPTIONS.get(name, {}))
        return done[name]

    return get
