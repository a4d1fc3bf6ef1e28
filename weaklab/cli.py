"""``weaklab studies | run | report``; ``python -m studies.NAME`` is ``weaklab run NAME``.

Every bad value ends the command with one line on stderr naming the parameter, the value
and what is allowed, exit status 2, before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from weaklab.registry import ConfigError


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", help="dataset name (default: the study's; a paper dataset selects its preset)")
    p.add_argument("--data-root", help="folder holding torchvision-format dataset files")
    p.add_argument("--smoke", action="store_true", help="tiny version of the study (writes RESULTS/STUDY-smoke)")
    p.add_argument("--seeds", type=int, help="number of seeds (default: the study's)")
    p.add_argument("--results", default="results", help="results root (default: results/)")
    p.add_argument("--address", help="join this Ray cluster ('auto' or host:port); default: start Ray locally")
    p.add_argument("--storage", default=os.environ.get("WEAKLAB_STORAGE") or None,
                   help="Tune experiment storage, a local path or a cloud URI (default $WEAKLAB_STORAGE, else RESULTS/_tune)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="fraction in (0, 1] to pack trials on one GPU, or a whole number")
    p.add_argument("--search", default="grid", help="grid (every point) or optuna")
    p.add_argument("--num-samples", type=int,
                   help="configurations sampled by --search optuna, split evenly over the arms with searched "
                        "hyperparameters; each runs on every seed (default: as many as those arms' grid points)")
    p.add_argument("--sampler", default="tpe", help="Optuna sampler of --search optuna: tpe, random, cmaes or qmc")
    p.add_argument("--optuna-storage",
                   help="Optuna storage for optuna-dashboard: sqlite:///study.db or a journal file (default: in memory)")
    p.add_argument("--scheduler", default="none", help="none or asha (early-stop weak trials)")
    p.add_argument("--max-failures", type=int, default=1, help="retries of a failing trial from its checkpoint")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once")
    p.add_argument("--checkpoint-every-s", type=float, default=5.0,
                   help="seconds between a trial's checkpoints (0: every epoch; the last epoch always saves)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (Tuner.restore)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a setting.*, hp.* or train.* value for the whole study (repeatable)")
    p.add_argument("--no-report", action="store_true", help="do not write the report when the study ends")


def _run(args: argparse.Namespace) -> int:
    from weaklab.tune.runner import RunOptions, prepare, run_study

    opts = RunOptions(results=args.results, storage=args.storage, address=args.address,
                      cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, search=args.search,
                      num_samples=args.num_samples, sampler=args.sampler, optuna_storage=args.optuna_storage,
                      scheduler=args.scheduler, max_failures=args.max_failures,
                      max_concurrent=args.max_concurrent, checkpoint_every_s=args.checkpoint_every_s,
                      resume=args.resume)
    study, configs = prepare(args.study, smoke=args.smoke, dataset=args.dataset, data_root=args.data_root,
                             seeds=args.seeds, sets=args.sets, build_data=False)
    n = f"{len(configs)} trials" if args.search == "grid" else "an Optuna search, seeds as replicates"
    print(f"weaklab: study {study.name} ({study.reproduces}) on {study.dataset}: {n}", flush=True)
    study_dir = run_study(args.study, smoke=args.smoke, dataset=args.dataset, data_root=args.data_root,
                          seeds=args.seeds, sets=args.sets, options=opts)
    print(f"weaklab: Parquet in {study_dir}/trials and {study_dir}/epochs", flush=True)
    if not args.no_report:
        from analysis.report import write_report

        print(f"weaklab: report in {write_report(study_dir)}", flush=True)
    return 0


def _studies(args: argparse.Namespace) -> int:
    from weaklab.study import STUDIES, discover, expand

    discover()

    for name, s in STUDIES.items():
        print(f"{name:24s} {s.reproduces:34s} {len(expand(s)):4d} trials  {s.title}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    print(write_report(args.study_dir, out=args.out))
    return 0


def main(argv: Sequence[str] | None = None, *, study: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="weaklab" if study is None else f"python -m studies.{study}",
                                     description="Ray Tune studies of weakly-supervised learning methods")
    if study is None:
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("studies", help="list the studies").set_defaults(fn=_studies)
        run = sub.add_parser("run", help="run a study through Ray Tune, writing Parquet")
        run.add_argument("study")
        _add_run_options(run)
        run.set_defaults(fn=_run)
        rep = sub.add_parser("report", help="figures and report.md from a study's Parquet")
        rep.add_argument("study_dir")
        rep.add_argument("--out", help="output folder (default STUDY_DIR/report)")
        rep.set_defaults(fn=_report)
        args = parser.parse_args(argv)
    else:
        _add_run_options(parser)
        args = parser.parse_args(argv)
        args.study, args.fn = study, _run
    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"weaklab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("weaklab: interrupted; finished trials are in Parquet, continue with --resume", file=sys.stderr)
        return 130


def study_main(name: str) -> None:
    sys.exit(main(study=name))


if __name__ == "__main__":
    sys.exit(main())
