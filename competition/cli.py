"""`python -m competition …` (also the `competition` command): one entry point, a subcommand per job.

Each subcommand imports what it needs only when it runs, so `folds` and `--help` stay quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from competition.errors import CompetitionError

COMPETITION_NAMES = ("dogs-vs-cats", "cifar-10", "imagefolder")


def default_data_dir(competition: str) -> Path:
    return Path("inputs") / competition


def cmd_sample(args: argparse.Namespace) -> int:
    from competition.competitions import get_competition
    from competition.sample_data import write_sample

    counts = write_sample(get_competition(args.competition), args.out, args.n_train, args.n_test, args.seed, args.force)
    print(f"Wrote a SAMPLE (synthetic) {args.competition} data set to {args.out}: {counts[0]} train, {counts[1]} test images.")
    return 0


def cmd_folds(args: argparse.Namespace) -> int:
    from competition.competitions import get_competition
    from competition.folds import build_folds, summary_table, write_folds

    data_dir = args.data or default_data_dir(args.competition)
    out = args.out or Path("folds") / f"{args.competition}.csv"
    report = build_folds(
        get_competition(args.competition), data_dir, args.k, args.seed, args.group_duplicates, args.hash_distance
    )
    write_folds(report.frame, out)
    print(f"{len(report.frame)} images from {data_dir} in {args.k} stratified folds (seed {args.seed}) → {out}")
    if args.group_duplicates:
        print(
            f"Duplicates kept within one fold: {report.exact_duplicates} exact, "
            f"{report.near_duplicates} near (perceptual hash ≤ {args.hash_distance} bits)"
            + (f"; {report.unmoved} could not be moved" if report.unmoved else "")
        )
    print(summary_table(report.frame))
    print(f"took {report.seconds:.1f}s")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from competition.models import run_models_command

    return run_models_command(summary=args.summary, input=args.input, names=args.names or None)


def cmd_train(args: argparse.Namespace) -> int:
    from competition.train import main as train_main

    return train_main(args.train_args)


def cmd_predict(args: argparse.Namespace) -> int:
    from competition.predict import main as predict_main

    return predict_main(args.rest)


def cmd_submit(args: argparse.Namespace) -> int:
    from competition.competitions import get_competition
    from competition.kaggle_upload import submit

    name = args.competition or args.file.resolve().parent.name  # submissions/<competition>/<name>.csv
    competition = get_competition(name)
    data_dir = args.data or default_data_dir(competition.name)
    submit(args.file, args.message, competition, data_dir, dry_run=args.dry_run)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from competition.runs import run_runs_command

    return run_runs_command(args.competition, args.runs, args.submissions)


def cmd_report(args: argparse.Namespace) -> int:
    from competition.report import run_report_command

    return run_report_command(args.exp, args.competition, args.runs, wandb=not args.no_wandb)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="competition", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sample", help="write a small synthetic data set in a competition's raw layout")
    p.add_argument("competition", choices=COMPETITION_NAMES)
    p.add_argument("--out", type=Path, required=True, help="directory to write (the data directory to use)")
    p.add_argument("--n-train", type=int, default=None, help="training images (default: per competition)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default: per competition)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace an existing sample at --out")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("folds", help="write folds/<competition>.csv: stratified k-fold assignment of every image")
    p.add_argument("competition", choices=COMPETITION_NAMES)
    p.add_argument("--data", type=Path, default=None, help="raw data directory (default: inputs/<competition>)")
    p.add_argument("--k", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--seed", type=int, default=42, help="shuffle seed; the same seed gives the same file")
    p.add_argument("--out", type=Path, default=None, help="CSV to write (default: folds/<competition>.csv)")
    p.add_argument(
        "--group-duplicates", action="store_true", help="keep exact and near-duplicate images in one fold"
    )
    p.add_argument("--hash-distance", type=int, default=4, help="max perceptual-hash bits apart for near duplicates")
    p.set_defaults(func=cmd_folds)

    p = sub.add_parser("models", help="list the available models, or print one model's layer-by-layer shapes")
    p.add_argument("names", nargs="*", help="models to list (default: all)")
    p.add_argument("--summary", metavar="MODEL", default=None, help="e.g. custom/resnet50")
    p.add_argument("--input", default="3x224x224", help="input shape CxHxW for --summary")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "train", add_help=False,
        help="train an experiment's folds in this process (same arguments as train.py; see `train --help`)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "predict", add_help=False,
        help="ensemble fold checkpoints into a validated submission (see `predict --help`)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("submit", help="validate a submission CSV again and upload it to Kaggle")
    p.add_argument("file", type=Path, help="submissions/<competition>/<name>.csv")
    p.add_argument("-m", "--message", required=True, help="the submission's description on Kaggle")
    p.add_argument("--competition", choices=COMPETITION_NAMES, default=None, help="default: the file's folder name")
    p.add_argument("--data", type=Path, default=None, help="raw data directory holding sampleSubmission.csv")
    p.add_argument("--dry-run", action="store_true", help="validate and show what would be sent, upload nothing")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("runs", help="leaderboard of trained experiments: CV, OOF, time, submissions")
    p.add_argument("competition", nargs="?", choices=COMPETITION_NAMES, default=None)
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--submissions", type=Path, default=Path("submissions"))
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("report", help="PNG figures of an experiment: learning curves, confusion, calibration")
    p.add_argument("exp")
    p.add_argument("--competition", choices=COMPETITION_NAMES, default=None)
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--no-wandb", action="store_true", help="do not log the figures to W&B")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if args.command == "train":  # train.py owns its arguments: --config, --fold, key=value overrides
        args.train_args = rest
    elif args.command == "predict":
        args.rest = rest
    elif rest:
        build_parser().parse_args(argv)  # reports the unrecognised arguments
    try:
        return args.func(args)
    except CompetitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
