"""A smoke study's wall time with its Parquet and Tune state on an S3 API against a local
folder (issue 16): moto's standalone server on this machine stands in for the bucket, so
this measures the object-store code path (single-PUT writes, listing, the experiment
state synced to the bucket), not a network.

    python benchmarks/bench_store.py [--study tau-sweep] [--repeats 2]

Each repeat runs ``weaklab run STUDY --smoke --no-report`` as a subprocess, alternating
local and S3 so a load change hits both; prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "weaklab-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _moto() -> tuple[subprocess.Popen, dict[str, str]]:
    import boto3

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    return proc, env


def _run(study: str, results: str, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "weaklab.cli", "run", study, "--smoke", "--no-report", "--results", results]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="tau-sweep")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    proc, env = _moto()
    walls: dict[str, list[float]] = {"local": [], "s3": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeats):
                for where in ("local", "s3"):
                    results = os.path.join(tmp, f"r{i}") if where == "local" else f"s3://{BUCKET}/r{i}"
                    load = os.getloadavg()[0]
                    walls[where].append(_run(args.study, results, env if where == "s3" else {}))
                    print(f"{args.study} --smoke, results {where:5s} run {i}: {walls[where][-1]:6.1f} s "
                          f"(load {load:.1f})", flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    loc, s3 = statistics.median(walls["local"]), statistics.median(walls["s3"])
    print(f"median: local {loc:.1f} s, s3 {s3:.1f} s ({s3 / loc:.2f}x)")


if __name__ == "__main__":
    main()
