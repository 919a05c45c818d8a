"""`competition runs`: every experiment under runs/ as one leaderboard row, read from its files only.

A run directory is `runs/<competition>/<exp>/` (see competition.train): `cv.json` and `oof.csv` once
folds have finished, and per fold `fold<k>/` with `summary.json` when that fold is done. Runs still
training, killed or half-copied are listed with what they have; anything else is skipped.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competition.competitions import COMPETITIONS, get_competition
from competition.config import load_config
from competition.errors import CompetitionError
from competition.metrics import HIGHER_IS_BETTER

FOLD_DIR = re.compile(r"^fold(\d+|_all)$")
MISSING = "—"
TABLE_METRICS = ("accuracy", "log_loss")  # CV and OOF columns shown for every run
SHORT = {"accuracy": "acc", "log_loss": "logloss", "f1_macro": "f1", "loss": "loss"}
COLUMN_GAP = "  "
UPLOADED = "↑"


def _read_json(path: Path) -> dict | None:
    """A JSON object, or None when absent or unreadable (a file being written, a foreign file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fold_dirs(run: Path) -> list[Path]:
    """fold0, fold1, …, fold10 in numeric order, then fold_all."""
    found = [p for p in run.iterdir() if p.is_dir() and FOLD_DIR.match(p.name)]
    return sorted(found, key=lambda p: (p.name == "fold_all", int(p.name[4:]) if p.name[4:].isdigit() else 0))


def is_run_dir(path: Path) -> bool:
    if not path.is_dir() or path.name.startswith("."):  # .name.tmp/.old: atomic_dir's scratch folders
        return False
    return (path / "config.yaml").is_file() or (path / "cv.json").is_file() or bool(fold_dirs(path))


def list_experiments(output_dir: Path = Path("runs"), competition: str | None = None) -> list[tuple[str, str]]:
    """(competition, exp) of every run directory; only folders named after a known competition count."""
    output_dir = Path(output_dir)
    names = [competition] if competition is not None else sorted(COMPETITIONS)
    return [
        (name, exp.name)
        for name in names
        if (output_dir / name).is_dir()
        for exp in sorted((output_dir / name).iterdir())
        if is_run_dir(exp)
    ]


def _config(run: Path, folds: list[Path]) -> Any:
    # The run-level config is rewritten when each fold starts; a fold's copy serves if it is missing.
    for path in [run / "config.yaml", *(f / "config.yaml" for f in folds)]:
        if path.is_file():
            try:
                return load_config(path)
            except CompetitionError:
                continue
    return None


def _epochs_done(fold: Path) -> int:
    try:
        return sum(1 for line in (fold / "metrics.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _cv_scores(run: Path, summaries: dict[str, dict]) -> tuple[dict[str, dict], dict, dict, dict]:
    """per_fold, mean, std and oof metrics, from cv.json when it covers exactly the finished folds.

    Otherwise (cv.json not written yet, or older than the last finished fold) per-fold scores come
    from the summaries and there is no OOF score: it needs every finished fold's oof.csv pooled.
    """
    cv = _read_json(run / "cv.json")
    if cv is not None and set(cv.get("folds", [])) == set(summaries):
        return cv.get("per_fold", {}), cv.get("mean", {}), cv.get("std", {}), cv.get("oof", {})
    per_fold = {
        name: {k[4:]: v for k, v in (s.get("best") or {}).items() if k.startswith("val_")}
        for name, s in summaries.items()
    }
    keys = sorted({k for m in per_fold.values() for k in m})
    mean = {k: float(np.mean([m[k] for m in per_fold.values() if k in m])) for k in keys}
    std = {k: float(np.std([m[k] for m in per_fold.values() if k in m])) for k in keys}
    return per_fold, mean, std, {}


def _one_value(values: list) -> Any:
    """The value every fold agrees on; several (a run resumed on other hardware) joined with '/'."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else "/".join(map(str, distinct))


def _submissions(submissions_dir: Path, competition: str) -> list[tuple[str, list[str], bool]]:
    """(name, experiments, uploaded) of every sidecar in submissions/<competition>/."""
    folder = Path(submissions_dir) / competition
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        meta = _read_json(path)
        if meta is None or not isinstance(meta.get("experiments"), list):
            continue
        found.append((path.stem, [str(e) for e in meta["experiments"]], bool(meta.get("uploads"))))
    return found


def _run_row(run: Path, competition: str, sidecars: list[tuple[str, list[str], bool]]) -> dict[str, Any]:
    folds = fold_dirs(run)
    cfg = _config(run, folds)
    summaries = {f.name: s for f in folds if (s := _read_json(f / "summary.json")) is not None}
    cv_summaries = {k: v for k, v in summaries.items() if k != "fold_all"}
    unfinished = [f for f in folds if f.name not in summaries]
    best = cfg.trainer.best_metric if cfg else next((s.get("best_metric") for s in summaries.values()), None)
    per_fold, mean, std, oof = _cv_scores(run, cv_summaries)
    # With EMA the kept checkpoint (and the OOF file) is the EMA's, so its scores are the run's scores.
    key = {k: f"ema_{k}" if f"ema_{k}" in mean else k for k in {*TABLE_METRICS, best}}
    row: dict[str, Any] = {
        "competition": competition,
        "exp": run.name,
        "model": cfg.model.name if cfg else None,
        "image_size": cfg.data.image_size if cfg else None,
        "epochs": cfg.trainer.epochs if cfg else None,
        "best_metric": best,
        "metric": get_competition(competition).metric,
        "folds_finished": len(cv_summaries),
        "folds_unfinished": len(unfinished),
        "unfinished": [f"{f.name} {_epochs_done(f)}/{cfg.trainer.epochs if cfg else '?'}" for f in unfinished],
        "fold_all": "fold_all" in summaries,
    }
    for name in [f.name for f in folds if f.name != "fold_all"]:  # unfinished folds get an empty cell
        row[name] = per_fold.get(name, {}).get(key[best]) if best else None
    for m in TABLE_METRICS:
        row[f"cv_{m}_mean"], row[f"cv_{m}_std"] = mean.get(key[m]), std.get(key[m])
    row["cv_best_mean"], row["cv_best_std"] = (mean.get(key[best]), std.get(key[best])) if best else (None, None)
    row |= {f"oof_{m}": oof.get(m) for m in TABLE_METRICS}
    done = list(summaries.values())
    speeds = [s["images_per_s"] for s in done if s.get("images_per_s") is not None]
    row |= {
        # every fold's training time, fold_all included: what the experiment cost
        "seconds": sum(s.get("seconds") or 0.0 for s in done) if done else None,
        "images_per_s": float(np.mean(speeds)) if speeds else None,
        "processes": _one_value([s.get("processes") for s in done]),
        "precision": _one_value(["fp32" if s.get("precision") == "no" else s.get("precision") for s in done]),
        "device": _one_value([s.get("device") for s in done]),
        "submissions": [name for name, exps, _ in sidecars if run.name in exps],
        "uploaded": [name for name, exps, up in sidecars if run.name in exps and up],
    }
    return row


def collect_runs(
    output_dir: Path = Path("runs"), competition: str | None = None, submissions_dir: Path = Path("submissions")
) -> pd.DataFrame:
    """One row per experiment under `output_dir` (optionally one competition's), with the submissions made from it."""
    if competition is not None:
        get_competition(competition)  # an unknown name is a typo, not an empty leaderboard
    rows, sidecars = [], {}
    for comp, exp in list_experiments(output_dir, competition):
        if comp not in sidecars:
            sidecars[comp] = _submissions(submissions_dir, comp)
        rows.append(_run_row(Path(output_dir) / comp / exp, comp, sidecars[comp]))
    frame = pd.DataFrame(rows)
    fold_columns = sorted((c for c in frame.columns if re.fullmatch(r"fold\d+", c)), key=lambda c: int(c[4:]))
    rest = [c for c in frame.columns if c not in fold_columns]
    at = rest.index("fold_all") + 1 if "fold_all" in rest else len(rest)
    return frame[rest[:at] + fold_columns + rest[at:]]


# ---- formatting -----------------------------------------------------------------------------------
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _score(value: Any) -> str:
    return MISSING if _missing(value) else f"{value:.4f}"


def _mean_std(mean: Any, std: Any) -> str:
    if _missing(mean):
        return MISSING
    return f"{mean:.4f} ± {std:.4f}" if not _missing(std) else f"{mean:.4f}"


def _duration(seconds: Any) -> str:
    if _missing(seconds):
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _text(value: Any) -> str:
    return MISSING if _missing(value) or value == "" else str(value)


def _align(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return COLUMN_GAP.join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _section(df: pd.DataFrame, competition: str) -> str:
    metric = get_competition(competition).metric
    higher = metric in HIGHER_IS_BETTER
    df = df.sort_values(f"cv_{metric}_mean", ascending=not higher, na_position="last", kind="stable")
    # only the folds this competition's runs have (the frame holds every competition's)
    fold_columns = [c for c in df.columns if re.fullmatch(r"fold\d+", c) and df[c].notna().any()]
    cv_metrics = [metric, *(m for m in TABLE_METRICS if m != metric)]
    extra_best = any(b not in TABLE_METRICS for b in df["best_metric"].dropna())
    header = ["#", "exp", "model", "size", "epochs", "folds", "best by", *fold_columns]
    header += [f"CV {SHORT[m]}" for m in cv_metrics] + (["CV best"] if extra_best else [])
    header += [f"OOF {SHORT[m]}" for m in cv_metrics] + ["time", "img/s", "hardware", "submissions"]
    rows = []
    for rank, r in enumerate(df.to_dict("records"), 1):
        folds = f"{r['folds_finished']}/{r['folds_finished'] + r['folds_unfinished']}"
        folds += "+all" if r["fold_all"] else ""
        hardware = MISSING if _missing(r.get("device")) else (
            f"{_text(r.get('processes'))}×{r['device']} {_text(r.get('precision'))}"
        )
        subs = [s + (UPLOADED if s in r["uploaded"] else "") for s in r["submissions"]]
        cells = [str(rank), r["exp"], _text(r["model"]), _text(r["image_size"]), _text(r["epochs"]), folds,
                 SHORT.get(r["best_metric"], _text(r["best_metric"]))]
        cells += [_score(r.get(c)) for c in fold_columns]
        cells += [_mean_std(r.get(f"cv_{m}_mean"), r.get(f"cv_{m}_std")) for m in cv_metrics]
        cells += [_mean_std(r.get("cv_best_mean"), r.get("cv_best_std"))] if extra_best else []
        cells += [_score(r.get(f"oof_{m}")) for m in cv_metrics]
        speed = r.get("images_per_s")
        cells += [_duration(r.get("seconds")), MISSING if _missing(speed) else f"{speed:.0f}", hardware,
                  ", ".join(subs) or MISSING]
        rows.append(cells)
    numeric = {0, 3, 4, *range(7, len(header) - 2)}
    order = "lower" if not higher else "higher"
    title = f"{competition}: {len(rows)} experiment(s), ranked by CV {metric} ({order} is better)"
    notes = ["fold columns: each run's best-by metric on that fold; folds: finished/started (+all: fold_all trained)"]
    if any(r["unfinished"] for r in df.to_dict("records")):
        notes.append("unfinished: " + "; ".join(
            f"{r['exp']} {', '.join(r['unfinished'])} epochs" for r in df.to_dict("records") if r["unfinished"]
        ))
    if any(r["uploaded"] for r in df.to_dict("records")):
        notes.append(f"{UPLOADED} uploaded to Kaggle")
    return "\n".join([title, _align(header, rows, numeric), *notes])


def format_runs_table(df: pd.DataFrame) -> str:
    """A leaderboard per competition, best CV score first by the competition's own metric."""
    if df.empty:
        return ""
    return "\n\n".join(_section(df[df["competition"] == c], c) for c in dict.fromkeys(df["competition"]))


def run_runs_command(
    competition: str | None, output_dir: Path = Path("runs"), submissions_dir: Path = Path("submissions")
) -> int:
    """Print the leaderboard of the runs under `output_dir` (the CLI's `runs` subcommand)."""
    df = collect_runs(output_dir, competition, submissions_dir)
    if df.empty:
        which = f"{competition} runs" if competition else "runs"
        print(
            f"No {which} under {Path(output_dir)}/: train one with make train "
            f"COMPETITION={competition or 'dogs-vs-cats'} EXP=<config name> (configs/<competition>/<exp>.yaml)."
        )
        return 0
    print(format_runs_table(df))
    return 0
