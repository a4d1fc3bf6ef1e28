import os

import pytest
import torch

# 2-core CI machine: one torch thread per process keeps Ray's trial processes from
# oversubscribing the cores.
torch.set_num_threads(1)


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
