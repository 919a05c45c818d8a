"""Ensembles of fold checkpoints: test predictions, their out-of-fold score, and a validated submission.

Every experiment contributes the average of its folds' best checkpoints; experiments are combined
with equal weights or with weights fitted on their out-of-fold predictions. The ensemble's OOF score
(same weights, same TTA) is printed beside each member's CV, so one sees what the ensemble bought.
Runs under `accelerate launch` for multi-GPU inference: every process predicts its share, the main
process gathers them back into the original order and writes the files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator, PartialState
from scipy.optimize import minimize
from tqdm.auto import tqdm

from competition.atomic import write_csv
from competition.checkpoint import file_sha256, load_checkpoint, read_checkpoint_meta
from competition.competitions import Competition, get_competition
from competition.competitions.base import list_images
from competition.config import Config, load_config
from competition.data import (
    ImageDataset,
    build_image_cache,
    load_fold_frame,
    make_loader,
    normalize_batch,
    resolve_num_workers,
)
from competition.device import resolve_mixed_precision, reuse_freed_cpu_memory
from competition.errors import CompetitionError
from competition.metrics import classification_metrics
from competition.submission import DEFAULT_CLIP, build_submission, write_submission
from competition.tracking import wandb_init_kwargs, wandb_mode

TTA_CHOICES = ("none", "hflip")
DEFAULT_BATCH = 256


@dataclass
class Member:
    """One fold checkpoint of one experiment."""

    exp: str
    fold: str  # "fold3" or "fold_all"
    path: Path
    meta: dict[str, Any]

    @property
    def validation_fold(self) -> int | None:
        return None if self.fold == "fold_all" else int(self.fold[4:])


def planned_folds(cfg: Config) -> set[int]:
    """The folds a run's config asks for: one fold, the listed folds, none (fold=all) or every fold in its CSV."""
    t = cfg.trainer
    if t.fold is not None:
        return set() if t.fold == "all" else {int(t.fold)}
    if t.folds:
        return set(t.folds)
    folds_csv = Path(cfg.data.folds_csv)
    return {int(f) for f in pd.read_csv(folds_csv, usecols=["fold"])["fold"].unique()} if folds_csv.is_file() else set()


def find_members(
    competition: Competition, exps: list[str], output_dir: Path, allow_missing: bool = False
) -> dict[str, list[Member]]:
    """Each experiment's fold checkpoints; missing folds are an error unless `allow_missing`."""
    members: dict[str, list[Member]] = {}
    root = Path(output_dir) / competition.name
    for exp in exps:
        run = root / exp
        if not (run / "config.yaml").is_file():
            known = sorted(p.name for p in root.iterdir() if (p / "config.yaml").is_file()) if root.is_dir() else []
            raise CompetitionError(
                f"Unknown experiment {exp!r} for {competition.name}: no {run}/config.yaml. "
                f"Trained experiments: {', '.join(known) or 'none yet (make train …)'}."
            )
        cfg = load_config(run / "config.yaml")
        expected = sorted(planned_folds(cfg) | {int(p.name[4:]) for p in run.glob("fold[0-9]*")})
        names = [f"fold{k}" for k in expected] + (["fold_all"] if (run / "fold_all").is_dir() else [])
        missing = [n for n in names if not (run / n / "best.safetensors").is_file()]
        if missing and not allow_missing:
            raise CompetitionError(
                f"{exp}: no best.safetensors for {', '.join(missing)} under {run}. Finish training them "
                f"(make train … --resume), or pass --allow-missing-folds to ensemble the others."
            )
        found = [Member(exp, n, run / n / "best.safetensors", read_checkpoint_meta(run / n / "best.safetensors"))
                 for n in names if n not in missing]
        if not found:
            raise CompetitionError(f"{exp}: no fold checkpoint at all under {run}; train it first.")
        members[exp] = found
    classes = {tuple(m.meta["classes"]) for ms in members.values() for m in ms}
    if len(classes) > 1:
        raise CompetitionError(f"The checkpoints disagree on the class list ({sorted(classes)}); ensemble only runs of one task.")
    return members


@torch.no_grad()
def predict_images(
    accelerator: Accelerator, member: Member, images: np.ndarray, tta: str, batch_size: int
) -> np.ndarray:
    """Class probabilities (N, C) for uint8 images (N, H, W, 3), in their order, once each."""
    model, meta = load_checkpoint(member.path)
    model = model.to(accelerator.device)
    workers = resolve_num_workers(None, accelerator.device, accelerator.num_processes)
    loader = accelerator.prepare_data_loader(
        make_loader(ImageDataset(images, None, None), batch_size, False, False, workers, 0, accelerator.device.type == "cuda")
    )
    probs = np.zeros((len(images), len(meta["classes"])), dtype=np.float32)
    seen = np.zeros(len(images), dtype=bool)
    show = accelerator.is_main_process and sys.stderr.isatty()
    for x, _, idx in tqdm(loader, desc=f"{member.exp} {member.fold}", disable=not show, leave=False):
        x = normalize_batch(x, meta["mean"], meta["std"])
        with accelerator.autocast():
            p = model(x).float().softmax(1)
            if tta == "hflip":  # averaged in probability space, as Kaggle ensembles are
                p = (p + model(x.flip(3)).float().softmax(1)) / 2
        p, idx = accelerator.gather_for_metrics((p, idx))
        probs[idx.cpu().numpy()] = p.cpu().numpy()
        seen[idx.cpu().numpy()] = True
    if not seen.all():
        raise RuntimeError(f"{member.path}: {int((~seen).sum())} images got no prediction from the gathered batches")
    return probs


def fit_weights(oofs: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to one that minimise the out-of-fold log loss of the blend."""
    n = len(oofs)
    if n == 1:
        return np.ones(1)
    stacked = np.stack(oofs)

    def loss(w: np.ndarray) -> float:
        blend = np.tensordot(w, stacked, axes=1)
        return float(-np.log(np.clip(blend[np.arange(len(targets)), targets], 1e-15, 1)).mean())

    result = minimize(
        loss, np.full(n, 1 / n), method="SLSQP", bounds=[(0, 1)] * n,
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1},),
    )
    w = np.clip(result.x, 0, None)
    return w / w.sum()


def image_cache(data_dir: Path, paths: list[str], meta: dict, cache_dir: Path) -> np.ndarray:
    # Evaluation sees the whole image resized to the training size, as validation did.
    return build_image_cache(data_dir, paths, int(meta["image_size"]), cache_dir)


def experiment_oof(
    accelerator: Accelerator, exp_members: list[Member], frame: pd.DataFrame, data_dir: Path,
    cache_dir: Path, tta: str, batch_size: int, run: Path,
) -> np.ndarray | None:
    """OOF probabilities of one experiment over all training images (None if it has no validated folds)."""
    validated = [m for m in exp_members if m.validation_fold is not None]
    if not validated:
        return None
    oof = np.full((len(frame), len(validated[0].meta["classes"])), np.nan, dtype=np.float32)
    for m in validated:
        rows = np.nonzero(frame["fold"].to_numpy() == m.validation_fold)[0]
        if tta == "none" and (run / m.fold / "oof.csv").is_file():  # the training run already predicted these
            saved = pd.read_csv(run / m.fold / "oof.csv", dtype={"id": str})
            by_id = saved.set_index("id")[[f"prob_{c}" for c in m.meta["classes"]]]
            oof[rows] = by_id.loc[frame["id"].astype(str).iloc[rows]].to_numpy()
        else:
            images = image_cache(data_dir, frame["path"].iloc[rows].tolist(), m.meta, cache_dir)
            oof[rows] = predict_images(accelerator, m, images, tta, batch_size)
    covered = ~np.isnan(oof).any(1)
    oof[covered] /= oof[covered].sum(1, keepdims=True)
    return oof


def predict(
    competition_name: str, exps: list[str], data_dir: Path | None = None, tta: str = "none",
    weights: str = "equal", name: str | None = None, hard: bool = False, clip: float = DEFAULT_CLIP,
    allow_missing: bool = False, output_dir: Path = Path("runs"), submissions_dir: Path = Path("submissions"),
    cache_dir: Path = Path(".cache/images"), batch_size: int = DEFAULT_BATCH, images_dir: Path | None = None,
    out: Path | None = None, track: bool = True,
) -> dict[str, Any]:
    """Predict the test set (or any folder) with the experiments' fold ensembles and write the files."""
    if tta not in TTA_CHOICES:
        raise CompetitionError(f"--tta must be one of {', '.join(TTA_CHOICES)}; got {tta!r}.")
    if weights not in ("equal", "oof"):
        raise CompetitionError(f"--weights must be 'equal' or 'oof'; got {weights!r}.")
    started = time.perf_counter()
    reuse_freed_cpu_memory()
    competition = get_competition(competition_name)
    data_dir = Path(data_dir or Path("inputs") / competition.name)
    members = find_members(competition, exps, output_dir, allow_missing)
    classes = next(iter(members.values()))[0].meta["classes"]
    first_meta = next(iter(members.values()))[0].meta
    state = PartialState(cpu=not torch.cuda.is_available())
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=resolve_mixed_precision(
        first_meta["config"]["trainer"]["mixed_precision"], use_cpu=not torch.cuda.is_available()))
    say = accelerator.print
    say(f"Predicting with {sum(len(m) for m in members.values())} checkpoint(s) of {', '.join(exps)} on "
        f"{accelerator.device.type}, {state.num_processes} process(es), TTA {tta}")

    if images_dir is not None:
        files = list_images(Path(images_dir))
        if not files:
            raise CompetitionError(f"No images in {images_dir}.")
        paths, ids = [p.name for p in files], [p.name for p in files]
        root = Path(images_dir)
    else:
        test = competition.read_test(data_dir)
        sample = competition.read_sample_submission(data_dir)
        check_test_matches_sample(test, sample, data_dir, competition)
        paths, ids, root = test["path"].tolist(), test["id"].tolist(), data_dir

    per_exp_test, per_exp_oof, cv = {}, {}, {}
    frame = None
    for exp, ms in members.items():
        run = Path(output_dir) / competition.name / exp
        probs = [predict_images(accelerator, m, image_cache(root, paths, m.meta, cache_dir), tta, batch_size) for m in ms]
        per_exp_test[exp] = np.mean(probs, axis=0)
        if images_dir is None:
            cfg = load_config(run / "config.yaml")
            frame, _ = load_fold_frame(competition, data_dir, Path(cfg.data.folds_csv))
            oof = experiment_oof(accelerator, ms, frame, data_dir, cache_dir, tta, batch_size, run)
            if oof is not None:
                per_exp_oof[exp] = (oof, frame["target"].to_numpy())
                covered = ~np.isnan(oof).any(1)
                cv[exp] = classification_metrics(oof[covered], frame["target"].to_numpy()[covered]) | {
                    "images": int(covered.sum())}

    w = np.full(len(exps), 1 / len(exps))
    ensemble_oof = None
    if per_exp_oof and len(per_exp_oof) == len(exps):
        common = np.all([~np.isnan(o).any(1) for o, _ in per_exp_oof.values()], axis=0)
        targets = next(iter(per_exp_oof.values()))[1][common]
        oofs = [per_exp_oof[e][0][common] for e in exps]
        if weights == "oof":
            w = fit_weights(oofs, targets)
        blend = np.tensordot(w, np.stack(oofs), axes=1)
        ensemble_oof = classification_metrics(blend, targets) | {"images": int(common.sum())}
    elif weights == "oof":
        raise CompetitionError("--weights oof needs out-of-fold predictions for every experiment (fold_all runs have none).")
    test_probs = np.tensordot(w, np.stack([per_exp_test[e] for e in exps]), axes=1)

    name = name or "+".join(exps) + ("-tta" if tta != "none" else "")
    result: dict[str, Any] = {
        "competition": competition.name, "experiments": exps, "weights": dict(zip(exps, map(float, w))),
        "folds": {e: [m.fold for m in ms] for e, ms in members.items()}, "tta": tta, "hard": hard, "clip": clip,
        "cv": cv, "ensemble_oof": ensemble_oof, "data_dir": str(data_dir), "images": len(ids),
        "checkpoints": {f"{m.exp}/{m.fold}": file_sha256(m.path) for ms in members.values() for m in ms},
    }
    if not accelerator.is_main_process:
        return result
    for exp in exps:
        if exp in cv:
            say(f"  {exp:<28} weight {result['weights'][exp]:.3f}  OOF accuracy {cv[exp]['accuracy']:.4f}  "
                f"log loss {cv[exp]['log_loss']:.4f}")
    if ensemble_oof:
        say(f"  {'ensemble':<28} {'':13} OOF accuracy {ensemble_oof['accuracy']:.4f}  log loss {ensemble_oof['log_loss']:.4f}")

    if images_dir is not None:
        target = Path(out or Path(submissions_dir) / competition.name / f"{name}-images.csv")
        table = pd.DataFrame({"image": ids} | {f"prob_{c}": test_probs[:, i] for i, c in enumerate(classes)})
        write_csv(table, target)
        result["files"] = {"probabilities": str(target)}
    else:
        frame_sub = build_submission(competition, data_dir, ids, test_probs, classes, hard=hard, clip=clip)
        hard_labels = dict(zip(ids, competition.hard_labels(test_probs, classes)))
        target = Path(out or Path(submissions_dir) / competition.name / f"{name}.csv")
        files = write_submission(frame_sub, target, hard_labels, sidecar=result)
        result["files"] = {k: str(v) for k, v in files.items()}
        if track:
            log_prediction(first_meta, competition.name, exps[0], name, target, result, Path(output_dir))
    result["seconds"] = time.perf_counter() - started
    say(f"Wrote {', '.join(result['files'].values())} ({len(ids)} images, {result['seconds']:.0f}s)")
    return result


def check_test_matches_sample(test: pd.DataFrame, sample: pd.DataFrame, data_dir: Path, competition: Competition) -> None:
    """A test folder and sampleSubmission.csv must describe the same images before any model runs."""
    have = {str(i) for i in test["id"]}
    want = {str(i) for i in sample.iloc[:, 0]}
    if have != want:
        missing, extra = sorted(want - have)[:5], sorted(have - want)[:5]
        raise CompetitionError(
            f"{data_dir / competition.test_dir} does not match {data_dir / competition.sample_submission}: "
            f"{len(want - have)} id(s) without an image (e.g. {', '.join(missing) or '—'}), "
            f"{len(have - want)} image(s) not in the sample (e.g. {', '.join(extra) or '—'}). "
            "Re-download the test set or the sample submission."
        )


def log_prediction(meta: dict, competition: str, exp: str, name: str, csv: Path, sidecar: dict, output_dir: Path) -> None:
    """A W&B run (job_type=predict) with the submission as an Artifact whose metadata is the sidecar."""
    from competition.config import TrackingConfig

    tracking = TrackingConfig(**meta["config"]["tracking"])
    if wandb_mode(tracking) == "disabled":
        return
    import wandb

    run_dir = output_dir / competition / exp / "predictions"  # W&B's files live with the run, not the submissions
    kwargs = wandb_init_kwargs(tracking, f"predict-{name}", f"{competition}/{exp}", "predict", run_dir)
    run = wandb.init(project=tracking.project, config={"sidecar": sidecar}, **kwargs)
    if sidecar.get("ensemble_oof"):
        run.summary.update({f"oof_{k}": v for k, v in sidecar["ensemble_oof"].items()})
    artifact = wandb.Artifact(name=f"{competition}-{name}".replace("/", "-"), type="submission",
                              metadata=json.loads(json.dumps(sidecar, default=str)))
    artifact.add_file(str(csv))
    run.log_artifact(artifact)
    run.finish()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="competition predict", description=__doc__.splitlines()[0])
    parser.add_argument("competition")
    parser.add_argument("--exps", nargs="+", required=True, help="experiment names under runs/<competition>/")
    parser.add_argument("--data", type=Path, default=None, help="raw data directory (default inputs/<competition>)")
    parser.add_argument("--tta", default="none", choices=TTA_CHOICES, help="test-time augmentation")
    parser.add_argument("--weights", default="equal", choices=("equal", "oof"), help="experiment weights")
    parser.add_argument("--name", default=None, help="submission name (default: the experiments joined by +)")
    parser.add_argument("--hard", action="store_true", help="hard 0/1 labels (Dogs vs. Cats 2013, accuracy)")
    parser.add_argument("--clip", type=float, default=DEFAULT_CLIP, help="clip P(dog) into [clip, 1-clip]")
    parser.add_argument("--allow-missing-folds", action="store_true", help="ensemble the folds that exist")
    parser.add_argument("--images", type=Path, default=None, help="predict this folder instead: per-class CSV")
    parser.add_argument("--out", type=Path, default=None, help="output CSV path")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the runs are (default runs/)")
    parser.add_argument("--submissions", type=Path, default=Path("submissions"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/images"))
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--no-wandb", action="store_true", help="do not log the prediction to W&B")
    args = parser.parse_args(argv)
    try:
        predict(
            args.competition, args.exps, args.data, args.tta, args.weights, args.name, args.hard, args.clip,
            args.allow_missing_folds, args.runs, args.submissions, args.cache_dir, args.batch_size, args.images,
            args.out, track=not args.no_wandb and os.environ.get("WANDB_DISABLED", "") != "true",
        )
        return 0
    except CompetitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
