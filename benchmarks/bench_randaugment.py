"""RandAugment of a whole training set: per-image draws applied per op group
(``weaklab.augment.randaugment``) against torchvision's ``v2.RandAugment`` called once per
chunk of ``--chunk`` images (the former scheme of BalanceMix's eq. 9 views, one draw per
chunk).

One "view" is the digits-multi training set (3000 16x16 mosaics) augmented once; BalanceMix
makes two per epoch for eq. 9, and every multi-label method one more for its training
inputs. Process CPU time per view (1 torch thread), median of ``--repeats``.

    python -m benchmarks.bench_randaugment
    python -m benchmarks.bench_randaugment --dataset digits-multi-cells --chunk 32 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import emit
from weaklab.augment import randaugment, randaugment_chunked
from weaklab.data import load_dataset


def cpu_ms(fn, repeats: int) -> float:
    fn()  # warm-up: lazy torchvision import and kernels
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(1000 * (time.process_time() - t))
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits-multi")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--num-ops", type=int, default=2)
    ap.add_argument("--magnitude", type=int, default=9)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = load_dataset(args.dataset).x_train
    kw = {"num_ops": args.num_ops, "magnitude": args.magnitude}
    rows = []
    for scheme, fn in ((f"per-chunk of {args.chunk} (torchvision v2)", lambda: randaugment_chunked(x, chunk=args.chunk, **kw)),
                       ("per-image, one call per op group", lambda: randaugment(x, **kw))):
        rows.append({"scheme": scheme, "images": len(x), "cpu_ms_per_view": cpu_ms(fn, args.repeats)})
    rows[1]["speedup"] = rows[0]["cpu_ms_per_view"] / rows[1]["cpu_ms_per_view"]
    emit("randaugment", rows)


if __name__ == "__main__":
    main()
