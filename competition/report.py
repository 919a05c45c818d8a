"""`competition report EXP`: figures of one finished run (learning curves, OOF confusion matrix, calibration).

PNGs go to `runs/<competition>/<exp>/report/`, and optionally to a W&B run of the experiment's group
(offline unless credentials are set, as in training). Everything is read from the run directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Figures are built on matplotlib.figure.Figure, never pyplot: savefig renders with Agg whatever the
# process's backend, so this works headless, keeps no global figure registry and never switches the
# backend of a notebook that imports it.
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, confusion_matrix

from competition.atomic import atomic_path
from competition.config import Config, config_to_dict, load_config
from competition.errors import CompetitionError
from competition.metrics import classification_metrics
from competition.runs import fold_dirs, list_experiments
from competition.tracking import wandb_init_kwargs, wandb_mode

REPORT_DIR = "report"
CALIBRATION_BINS = 10
HISTOGRAM_BINS = 20
DPI = 120
AXIS_MARGIN = 0.03
ANNOTATE_MAX_CLASSES = 25  # beyond this the cell counts are unreadable; the colours still tell
FOLD_COLOURS = "tab10"
STYLE = {"train": "-", "val": "--", "val (EMA)": ":"}


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)  # explicit: the temporary name ends in .tmp
    return path


def _read_metrics(fold: Path) -> pd.DataFrame:
    path = fold / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return pd.DataFrame([json.loads(line) for line in lines if line.strip()])


def _best_epoch(fold: Path) -> int | None:
    try:
        return json.loads((fold / "summary.json").read_text()).get("best_epoch")
    except (OSError, ValueError):
        return None


def read_oof(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The run's pooled out-of-fold predictions: class names, targets (N,), probabilities (N, C)."""
    oof = pd.read_csv(run_dir / "oof.csv", dtype={"label": str})  # numeric class names stay names
    prob_columns = [c for c in oof.columns if c.startswith("prob_")]
    classes = [c.removeprefix("prob_") for c in prob_columns]
    targets = oof["label"].map({c: i for i, c in enumerate(classes)})
    if targets.isna().any():
        unknown = sorted(set(oof.loc[targets.isna(), "label"]))[:5]
        raise CompetitionError(f"{run_dir / 'oof.csv'}: labels {unknown} have no prob_ column; regenerate it by training.")
    probs = oof[prob_columns].to_numpy(float)
    return classes, targets.to_numpy(int), probs / probs.sum(1, keepdims=True)  # undo the CSV's rounding


def plot_learning_curves(run_dir: Path, out: Path) -> Path:
    """Train/val loss, val accuracy and learning rate against epoch, one colour per fold."""
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    ax_loss, ax_acc, ax_lr = fig.subplots(1, 3)
    palette = colormaps[FOLD_COLOURS]
    fold_handles, styles_used = [], {"train"}
    for i, fold in enumerate(fold_dirs(run_dir)):
        m = _read_metrics(fold)
        if m.empty:
            continue
        colour, best = palette(i % palette.N), _best_epoch(fold)
        label = "all" if fold.name == "fold_all" else fold.name
        ax_loss.plot(m["epoch"], m["train_loss"], STYLE["train"], color=colour, marker=".")
        for prefix, kind in (("val_", "val"), ("val_ema_", "val (EMA)")):
            style = STYLE[kind]
            for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
                if f"{prefix}{key}" not in m:
                    continue
                styles_used.add(kind)
                scored = m.dropna(subset=[f"{prefix}{key}"])  # epochs skipped by eval_every have no score
                ax.plot(scored["epoch"], scored[f"{prefix}{key}"], style, color=colour, marker=".")
                at_best = scored[scored["epoch"] == best]
                ax.plot(at_best["epoch"], at_best[f"{prefix}{key}"], "*", color=colour, markersize=12)
        ax_lr.plot(m["epoch"], m["lr"], "-", color=colour, marker=".")
        fold_handles.append(Line2D([], [], color=colour, label=label))
    styles = [Line2D([], [], color="black", linestyle=s, label=name) for name, s in STYLE.items() if name in styles_used]
    styles.append(Line2D([], [], color="black", marker="*", linestyle="", markersize=10, label="best epoch"))
    ax_loss.legend(handles=styles, fontsize="small")
    ax_acc.legend(handles=fold_handles, fontsize="small", title="fold")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "validation accuracy"), (ax_lr, "learning rate (end of epoch)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.suptitle(f"{run_dir.parent.name}/{run_dir.name}: learning curves")
    return _save(fig, out)


def plot_confusion_matrix(run_dir: Path, out: Path) -> Path:
    """Counts of true (rows) against predicted (columns) class, coloured by the fraction of each true class."""
    classes, targets, probs = read_oof(run_dir)
    counts = confusion_matrix(targets, probs.argmax(1), labels=np.arange(len(classes)))
    fractions = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = max(4.8, 0.55 * len(classes) + 2.5)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=45 if len(classes) > 4 else 0, ha="right" if len(classes) > 4 else "center")
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= ANNOTATE_MAX_CLASSES:
        for (r, c), n in np.ndenumerate(counts):
            ax.text(c, r, str(n), ha="center", va="center", color="white" if fractions[r, c] > 0.5 else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{run_dir.parent.name}/{run_dir.name}: OOF confusion matrix\naccuracy {accuracy:.4f} on {counts.sum()} images")
    return _save(fig, out)


def plot_calibration(run_dir: Path, out: Path) -> Path:
    """Reliability curve of the positive (second) class with the diagonal, over a histogram of its probabilities."""
    classes, targets, probs = read_oof(run_dir)
    positive = probs[:, 1]
    observed, predicted = calibration_curve(targets, positive, n_bins=CALIBRATION_BINS, pos_label=1)
    fig = Figure(figsize=(6, 7), layout="constrained")
    ax_curve, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    ax_curve.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    ax_curve.plot(predicted, observed, "o-", label=f"OOF ({CALIBRATION_BINS} bins)")
    ax_curve.set_ylabel(f"observed fraction of {classes[1]}")
    ax_curve.set_xlim(-AXIS_MARGIN, 1 + AXIS_MARGIN)  # points at 0 and 1 stay whole
    ax_curve.set_ylim(-AXIS_MARGIN, 1 + AXIS_MARGIN)
    ax_curve.legend(loc="upper left")
    ax_curve.grid(alpha=0.3)
    bins = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    ax_hist.hist([positive[targets == k] for k in (0, 1)], bins=bins, stacked=True, label=[f"true {c}" for c in classes])
    ax_hist.set_xlabel(f"predicted P({classes[1]})")
    ax_hist.set_ylabel("images")
    ax_hist.legend(loc="upper center", fontsize="small")
    scores = classification_metrics(probs, targets)
    brier = brier_score_loss(targets, positive, pos_label=1)
    ax_curve.set_title(
        f"{run_dir.parent.name}/{run_dir.name}: OOF calibration\n"
        f"log loss {scores['log_loss']:.4g}, Brier {brier:.4g}, {len(targets)} images"
    )
    return _save(fig, out)


def _run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CompetitionError(f"{path} not found: {run_dir} is not a run directory written by training.")
    return load_config(path)


def log_report(run_dir: Path, paths: list[Path]) -> Path | None:
    """Log the figures to a W&B run in the experiment's group; returns its local run folder (None if tracking is off)."""
    cfg = _run_config(run_dir)
    if wandb_mode(cfg.tracking) == "disabled":
        return None
    import wandb

    competition, exp = cfg.data.competition, cfg.trainer.exp
    kwargs = wandb_init_kwargs(cfg.tracking, f"{exp}-report", f"{competition}/{exp}", "report", run_dir)
    try:
        run = wandb.init(project=cfg.tracking.project, config=config_to_dict(cfg), **kwargs)
        try:
            run.log({p.stem: wandb.Image(str(p)) for p in paths})
            return Path(run.dir).parent
        finally:
            run.finish()
    except wandb.Error as e:  # the figures are already on disk: a W&B outage must not lose the report
        print(f"warning: could not log the report to W&B ({e}); the PNGs are in {run_dir / REPORT_DIR}", file=sys.stderr)
        return None


def write_report(run_dir: Path, log_to_wandb: bool = False) -> list[Path]:
    """Write the run's figures into `run_dir/report/` (and to W&B if asked); returns the PNG paths."""
    run_dir = Path(run_dir)
    if not (run_dir / "cv.json").is_file() or not (run_dir / "oof.csv").is_file():
        raise CompetitionError(
            f"{run_dir} has no finished cross-validation fold yet (no cv.json / oof.csv): finish training first, "
            f"e.g. rerun the same `make train` with ARGS=resume=true."
        )
    out = run_dir / REPORT_DIR
    paths = [
        plot_learning_curves(run_dir, out / "learning_curves.png"),
        plot_confusion_matrix(run_dir, out / "confusion_matrix.png"),
    ]
    if len(read_oof(run_dir)[0]) == 2:
        paths.append(plot_calibration(run_dir, out / "calibration.png"))
    if log_to_wandb:
        log_report(run_dir, paths)
    return paths


def find_run(exp: str, competition: str | None, output_dir: Path = Path("runs")) -> Path:
    """runs/<competition>/<exp>; without a competition, the one competition that has `exp`."""
    existing = list_experiments(output_dir, competition)
    matches = [Path(output_dir) / c / e for c, e in existing if e == exp]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CompetitionError(
            f"Experiment {exp!r} exists in several competitions: {', '.join(str(m) for m in matches)}. "
            f"Name the competition."
        )
    where = f"{Path(output_dir) / competition}" if competition else f"{Path(output_dir)}"
    known = ", ".join(f"{c}/{e}" for c, e in existing) or "none"
    raise CompetitionError(f"No run {exp!r} under {where}/. Experiments there: {known}.")


def run_report_command(
    exp: str, competition: str | None, output_dir: Path = Path("runs"), wandb: bool = True
) -> int:
    """Write one run's report figures and print where they went (the CLI's `report` subcommand)."""
    run_dir = find_run(exp, competition, output_dir)
    paths = write_report(run_dir)
    for path in paths:
        print(path)
    if wandb:
        logged = log_report(run_dir, paths)
        if logged is None:
            print("W&B: not logged (tracking is disabled for this run, or W&B failed: see above).")
        else:
            print(f"W&B: logged to {logged}" + ("  (offline: upload with `wandb sync` on it)" if "offline-run" in logged.name else ""))
    return 0
