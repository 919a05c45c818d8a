"""Training one experiment, fold by fold, under Hugging Face Accelerate.

The same code runs on one CPU, one GPU or many processes (`accelerate launch train.py …`): Accelerate
places the model, wraps it in DDP, shards the loaders, accumulates gradients and gathers validation
predictions; everything else reads like plain PyTorch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import set_seed
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from competition.atomic import write_csv, write_json, write_text
from competition.checkpoint import save_checkpoint
from competition.competitions import get_competition
from competition.config import Config, config_to_dict, format_config, load_config, save_config
from competition.data import (
    BatchAugment,
    ImageDataset,
    InMemoryBatches,
    build_image_cache,
    build_transforms,
    cache_size,
    images_to_tensor,
    load_extra_train,
    load_fold_frame,
    make_loader,
    normalize_batch,
    resolve_num_workers,
)
from competition.device import available_cores, resolve_mixed_precision, reuse_freed_cpu_memory
from competition.errors import CompetitionError
from competition.folds import read_folds
from competition.metrics import classification_metrics, is_better
from competition.models import create_model
from competition.optim import build_optimizer, build_scheduler
from competition.tracking import wandb_init_kwargs, wandb_mode

ALL = "all"  # fold name for training on every image (no validation), with the recipe chosen by CV


@dataclass
class Progress:
    """Where a fold stands; saved with Accelerate's state so a resumed run continues exactly."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed
    best_score: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"json": json.dumps(asdict(self))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(json.loads(state["json"]))


def run_dir(cfg: Config) -> Path:
    return Path(cfg.trainer.output_dir) / cfg.data.competition / str(cfg.trainer.exp)


def fold_name(fold: int | str) -> str:
    return f"fold{fold}" if fold != ALL else "fold_all"


def folds_to_train(cfg: Config, available: list[int]) -> list[int | str]:
    fold = cfg.trainer.fold
    if fold == ALL:
        return [ALL]
    wanted = [int(fold)] if fold is not None else (cfg.trainer.folds or available)
    for f in wanted:
        if f not in available:
            raise CompetitionError(
                f"Fold {f} is out of range: {cfg.data.folds_csv} has folds {available}. "
                f"Pick one of them, or fold=all to train on every image."
            )
    return list(wanted)


def class_weight_tensor(cfg: Config, targets: np.ndarray, n_classes: int) -> torch.Tensor | None:
    weights = cfg.trainer.class_weights
    if weights is None:
        return None
    if weights == "balanced":  # inverse class frequency, as scikit-learn's compute_class_weight
        counts = np.bincount(targets, minlength=n_classes)
        return torch.tensor(len(targets) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    if len(weights) != n_classes:
        raise CompetitionError(f"trainer.class_weights has {len(weights)} values for {n_classes} classes.")
    return torch.tensor(weights, dtype=torch.float32)


def build_mixup(cfg: Config, n_classes: int) -> Mixup | None:
    t = cfg.trainer
    if t.mixup_alpha <= 0 and t.cutmix_alpha <= 0:
        return None
    if t.class_weights is not None:
        raise CompetitionError("trainer.class_weights cannot be combined with mixup/cutmix (soft targets); drop one.")
    return Mixup(
        mixup_alpha=t.mixup_alpha, cutmix_alpha=t.cutmix_alpha, prob=t.mixup_prob,
        label_smoothing=t.label_smoothing, num_classes=n_classes,
    )


def batch_augment(cfg: Config) -> BatchAugment:
    """The in-memory path's augmentation: crops (padded or random-resized) and flips of whole batches."""
    d = cfg.data
    if d.coarse_dropout > 0:
        raise CompetitionError(
            "data.in_memory=true augments whole batches with crops and flips only; "
            "use data.coarse_dropout=0, or data.in_memory=false."
        )
    rrc = d.resize == "random_resized_crop"
    return BatchAugment(d.pad if d.resize == "pad_crop" else 0, d.hflip, d.image_size, d.scale_min if rrc else None)


def save_state_atomically(accelerator: Accelerator, state_dir: Path) -> None:
    """save_state into a fresh folder, then swap it in: a kill at any moment leaves one whole state."""
    tmp, old = state_dir.with_name("state.tmp"), state_dir.with_name("state.old")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if state_dir.exists():
            os.replace(state_dir, old)
        os.replace(tmp, state_dir)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


RESUME_MUST_MATCH = ("data.competition", "data.image_size", "model.name", "model.kwargs", "trainer.epochs")


def check_resumable(cfg: Config, fold_dir: Path) -> None:
    """A saved state only fits the model and schedule it was made with."""
    saved = load_config(fold_dir / "config.yaml")
    for key in RESUME_MUST_MATCH:
        section, name = key.split(".")
        was, now = getattr(getattr(saved, section), name), getattr(getattr(cfg, section), name)
        if was != now:
            raise CompetitionError(
                f"{fold_dir} was trained with {key}={was!r}, not {now!r}: its checkpoint cannot be resumed "
                f"with this config. Use the original setting, another trainer.exp, or delete {fold_dir}."
            )


def find_state(fold_dir: Path) -> Path | None:
    for name in ("state", "state.old"):  # state.old survives a kill between the two renames
        if (fold_dir / name).is_dir():
            return fold_dir / name
    return None


@torch.no_grad()
def predict_loader(accelerator: Accelerator, model: torch.nn.Module, loader, cfg: Config) -> tuple[np.ndarray, ...]:
    """Probabilities, targets and dataset indices of every sample, gathered across processes exactly once."""
    model.eval()
    probs, targets, indices = [], [], []
    for images, y, idx in loader:
        x = normalize_batch(images, cfg.data.mean, cfg.data.std, cfg.model.channels_last)
        with accelerator.autocast():
            logits = model(x)
        p, y, idx = accelerator.gather_for_metrics((logits.float().softmax(1), y, idx))
        probs.append(p.cpu())
        targets.append(y.cpu())
        indices.append(idx.cpu())
    return torch.cat(probs).numpy(), torch.cat(targets).numpy(), torch.cat(indices).numpy()


def check_coverage(indices: np.ndarray, n: int, fold: int | str) -> None:
    # gather_for_metrics has dropped or duplicated samples with uneven batches in some releases
    if len(indices) != n or not np.array_equal(np.sort(indices), np.arange(n)):
        raise RuntimeError(
            f"fold {fold}: validation gathered {len(indices)} predictions ({len(np.unique(indices))} distinct) "
            f"for {n} images; refusing to score an incomplete or duplicated set."
        )


def cpu_requested() -> bool:
    """CPU when asked (`accelerate launch --cpu`), and for several processes on a machine without a GPU.

    Accelerate only forms a multi-CPU (gloo) group when told it is on the CPU; torchrun-launched
    processes (`accelerate launch --multi_gpu --num_processes 2` on a CPU-only machine) are not told.
    """
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true":
        if os.environ.get("MASTER_ADDR") and "WORLD_SIZE" not in os.environ and "PMI_SIZE" not in os.environ:
            print(
                "warning: `accelerate launch --cpu --num_processes N` starts ONE process unless mpirun is set up "
                "(accelerate issue #2741); on a CPU-only machine use `accelerate launch --multi_gpu "
                "--num_processes N train.py …`, which starts N processes with torchrun.", file=sys.stderr,
            )
        return True
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def train_fold(cfg: Config, fold: int | str) -> dict[str, Any] | None:
    """Train one fold from scratch or from its last saved epoch; returns its summary (None if it was done)."""
    out = run_dir(cfg) / fold_name(fold)
    if (out / "summary.json").exists():
        if cfg.trainer.resume:
            print(f"{fold_name(fold)} of {cfg.trainer.exp} already finished: skipped.")
            return None
        raise CompetitionError(
            f"{out} already holds a finished run. Use resume=true to skip finished folds, "
            f"another experiment name (trainer.exp=…), or delete {out}."
        )
    state = find_state(out)
    if state is not None and not cfg.trainer.resume:
        raise CompetitionError(f"{out} holds an unfinished run: continue it with resume=true, or delete {out}.")
    if state is not None:
        check_resumable(cfg, out)

    t = cfg.trainer
    use_cpu = cpu_requested()
    precision = resolve_mixed_precision(t.mixed_precision, use_cpu=use_cpu)
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=t.grad_accum_steps,
        # The scheduler counts this process's optimizer steps; stepping it once per process per step
        # (Accelerate's default) would bend the curve with the number of processes.
        step_scheduler_with_optimizer=False,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        log_with="wandb" if wandb_mode(cfg.tracking) != "disabled" else None,
    )
    set_seed(t.seed + (0 if fold == ALL else int(fold)))
    torch.backends.cudnn.deterministic = t.deterministic
    torch.backends.cudnn.benchmark = not t.deterministic

    competition = get_competition(cfg.data.competition)
    data_dir = Path(cfg.data.data_dir)
    frame, classes = load_fold_frame(competition, data_dir, Path(cfg.data.folds_csv))
    is_val = np.zeros(len(frame), bool) if fold == ALL else (frame["fold"] == fold).to_numpy()
    train_idx, val_idx = np.nonzero(~is_val)[0], np.nonzero(is_val)[0]
    extra = load_extra_train(cfg.data.extra_train, classes)
    with accelerator.main_process_first():  # one process decodes; the others map the finished cache
        images = build_image_cache(data_dir, frame["path"].tolist(), cache_size(cfg.data), Path(cfg.data.cache_dir))
        extra_images = build_image_cache(extra[0], extra[1], cache_size(cfg.data), Path(cfg.data.cache_dir)) if extra else None
    targets = frame["target"].to_numpy()
    if extra is not None:  # appended after this competition's rows, to the training indices only
        n = len(images)
        images, targets = np.concatenate([images, extra_images]), np.concatenate([targets, extra[2]])
        train_idx = np.concatenate([train_idx, np.arange(n, len(images))])
        accelerator.print(f"+ {len(extra[2])} extra training images from {cfg.data.extra_train['competition']} ({extra[0]})")
    mixup = build_mixup(cfg, len(classes))
    batch = cfg.data.batch_size
    pin = accelerator.device.type == "cuda"
    workers = resolve_num_workers(cfg.data.num_workers, accelerator.device, accelerator.num_processes)
    val_set = ImageDataset(images, targets, build_transforms(cfg.data, train=False), rows=val_idx)
    val_loader = make_loader(val_set, cfg.data.eval_batch_size or batch, False, False, workers, t.seed, pin)
    if cfg.data.in_memory:  # small images: whole batches indexed from one tensor on the device, augmented there
        train_set, augment = None, batch_augment(cfg)
        train_loader = InMemoryBatches(
            images_to_tensor(images[train_idx], accelerator.device), targets[train_idx], batch, True,
            mixup is not None, t.seed, accelerator.process_index, accelerator.num_processes,
        )
    else:
        train_set, augment = ImageDataset(images, targets, build_transforms(cfg.data, train=True), rows=train_idx, seed=t.seed), None
        train_loader = make_loader(train_set, batch, True, mixup is not None, workers, t.seed, pin)

    model_kwargs = dict(cfg.model.kwargs) | ({"drop_rate": cfg.model.drop_rate} if cfg.model.drop_rate else {})
    model = create_model(
        cfg.model.name, len(classes), pretrained=cfg.model.pretrained,
        channels_last=cfg.model.channels_last, compile=cfg.model.compile, **model_kwargs,
    )
    optimizer = build_optimizer(model, cfg.optimizer)
    model, optimizer, val_loader = accelerator.prepare(model, optimizer, val_loader)
    if train_set is not None:
        train_loader = accelerator.prepare(train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / t.grad_accum_steps)
    if t.limit_train_batches:
        steps_per_epoch = math.ceil(min(len(train_loader), t.limit_train_batches) / t.grad_accum_steps)
    scheduler = accelerator.prepare(build_scheduler(optimizer, cfg.scheduler, t.epochs * steps_per_epoch, steps_per_epoch))
    ema = ModelEmaV3(accelerator.unwrap_model(model), decay=t.ema_decay) if t.ema else None
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    weight = class_weight_tensor(cfg, targets[train_idx], len(classes))
    weight = weight.to(accelerator.device) if weight is not None else None
    train_loss = SoftTargetCrossEntropy() if mixup else torch.nn.CrossEntropyLoss(weight, label_smoothing=t.label_smoothing)

    if state is not None:
        accelerator.load_state(str(state))
        accelerator.print(f"Resumed {fold_name(fold)} from {state} after epoch {progress.epoch}.")
    if accelerator.is_main_process:  # only now: a config naming an unknown model leaves no run directory
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        save_config(cfg, run_dir(cfg) / "config.yaml")
    group = f"{cfg.data.competition}/{t.exp}"
    accelerator.init_trackers(
        cfg.tracking.project, config=config_to_dict(cfg) | {"fold": fold},
        init_kwargs={"wandb": wandb_init_kwargs(cfg.tracking, f"{t.exp}-{fold_name(fold)}", group, "train", out)},
    )
    n_proc = accelerator.num_processes
    device = accelerator.device.type
    if device == "cpu":
        threads, cores = torch.get_num_threads(), available_cores()
        device = f"cpu ({threads} thread(s) per process)"
        if threads * n_proc < cores:
            accelerator.print(
                f"warning: {n_proc} process(es) × {threads} thread(s) use {threads * n_proc} of {cores} cores. "
                f"`accelerate launch` sets OMP_NUM_THREADS=1 unless given --num_cpu_threads_per_process "
                f"{max(1, cores // n_proc)} (as `make train` does on a machine without a GPU)."
            )
    accelerator.print(
        f"{group} {fold_name(fold)}: {len(train_idx)} train / {len(val_idx)} validation images, "
        f"{len(classes)} classes, model {cfg.model.name}, device {device}, "
        f"precision {'fp32' if precision == 'no' else precision} (asked: {t.mixed_precision}), "
        f"{n_proc} process(es), {workers} loader worker(s) each, batch {batch}×{n_proc}×{t.grad_accum_steps} accumulation, "
        f"{t.epochs} epochs of {steps_per_epoch} steps"
    )
    show_bar = accelerator.is_main_process and sys.stderr.isatty()
    try:
        for epoch in range(progress.epoch, t.epochs):
            model.train()
            train_loader.set_epoch(epoch)  # the shuffle order …
            if train_set is not None:
                train_set.set_epoch(epoch)  # … and the augmentations are functions of (seed, epoch)
            generator = torch.Generator(accelerator.device).manual_seed(t.seed * 100_003 + epoch)
            started, seen, batches, loss_sum = time.perf_counter(), 0, 0, torch.zeros((), device=accelerator.device)
            bar = tqdm(train_loader, desc=f"{fold_name(fold)} epoch {epoch + 1}/{t.epochs}", disable=not show_bar, leave=False)
            for i, (images, y, _) in enumerate(bar):
                if t.limit_train_batches and i >= t.limit_train_batches:
                    break
                if augment is not None:
                    images = augment(images, generator)
                x = normalize_batch(images, cfg.data.mean, cfg.data.std, cfg.model.channels_last)
                if mixup is not None:
                    x, y = mixup(x, y)
                with accelerator.accumulate(model):
                    loss = train_loss(model(x), y)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and t.clip_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), t.clip_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if accelerator.sync_gradients:
                    scheduler.step()
                    progress.step += 1
                    if ema is not None:
                        ema.update(accelerator.unwrap_model(model), step=progress.step)
                loss_sum += loss.detach()
                seen, batches = seen + len(images), batches + 1
                if progress.step % t.log_every == 0 and accelerator.sync_gradients:  # .item() syncs: only here
                    lr = scheduler.get_last_lr()[0]
                    accelerator.log({"train/loss": loss.item(), "train/lr": lr}, step=progress.step)
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", img_s=f"{seen * n_proc / (time.perf_counter() - started):.0f}")
            bar.close()
            seconds = time.perf_counter() - started
            record = {
                "epoch": epoch + 1, "step": progress.step, "lr": scheduler.get_last_lr()[0],
                "train_loss": accelerator.reduce(loss_sum, "mean").item() / max(1, batches),
                "images_per_s": seen * n_proc / seconds, "epoch_seconds": seconds,
            }
            if len(val_idx) and ((epoch + 1) % t.eval_every == 0 or epoch + 1 == t.epochs):
                record |= evaluate(accelerator, model, ema, val_loader, val_idx, frame, classes, cfg, fold, epoch, progress, out)
            elif fold == ALL:  # no validation: the last epoch is the model
                progress.best_epoch = epoch + 1
                if accelerator.is_main_process:
                    save_checkpoint(accelerator.unwrap_model(model), out / "best.safetensors", checkpoint_meta(cfg, classes, fold, epoch + 1, None))
            progress.history.append(record)
            progress.epoch = epoch + 1
            progress.seconds += seconds
            accelerator.log({f"epoch/{k}": v for k, v in record.items()}, step=progress.step)
            accelerator.print(epoch_line(fold, t.epochs, record, t.best_metric))
            if accelerator.is_main_process:
                write_text("".join(json.dumps(r) + "\n" for r in progress.history), out / "metrics.jsonl")
            save_state_atomically(accelerator, out / "state")
    except torch.OutOfMemoryError as e:
        raise CompetitionError(
            f"Out of memory on {accelerator.device} with data.batch_size={batch}: lower it, "
            f"or keep the effective batch with trainer.grad_accum_steps. The last finished epoch is saved."
        ) from e

    summary = {
        "fold": fold, "best_epoch": progress.best_epoch, "best_metric": t.best_metric,
        "best_score": progress.best_score, "epochs": t.epochs, "seconds": progress.seconds,
        "images_per_s": float(np.mean([r["images_per_s"] for r in progress.history])) if progress.history else None,
        "processes": n_proc, "precision": precision, "device": accelerator.device.type,
        "best": next((r for r in progress.history if r["epoch"] == progress.best_epoch), None),
    }
    if accelerator.is_main_process:
        write_json(summary, out / "summary.json")
        tracker_summary(accelerator, summary)
    for tracker in accelerator.trackers:  # not end_training(): that also ends the process group the next fold needs
        tracker.finish()
    accelerator.wait_for_everyone()
    return summary


def evaluate(accelerator, model, ema, val_loader, val_idx, frame, classes, cfg, fold, epoch, progress, out) -> dict:
    """Score the raw model (and the EMA); keep the best epoch's weights and out-of-fold predictions."""
    t = cfg.trainer
    scored = {"": model} | ({"ema_": ema.module} if ema is not None else {})
    record, chosen = {}, None
    for prefix, net in scored.items():
        probs, targets, indices = predict_loader(accelerator, net, val_loader, cfg)
        check_coverage(indices, len(val_idx), fold)
        metrics = classification_metrics(probs, targets)
        metrics["loss"] = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-15)), torch.from_numpy(targets)))
        record |= {f"val_{prefix}{k}": v for k, v in metrics.items()}
        chosen = (net, probs, indices, metrics[t.best_metric])  # with EMA on, the EMA weights are the ones kept
    net, probs, indices, score = chosen
    if is_better(score, progress.best_score, t.best_mode):
        progress.best_score, progress.best_epoch = score, epoch + 1
        if accelerator.is_main_process:
            save_checkpoint(accelerator.unwrap_model(net), out / "best.safetensors", checkpoint_meta(cfg, classes, fold, epoch + 1, score))
            write_csv(oof_frame(frame, val_idx[indices], probs, classes), out / "oof.csv")
    return record


def oof_frame(frame: pd.DataFrame, indices: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    rows = frame.iloc[indices]
    oof = pd.DataFrame({"id": rows["id"].to_numpy(), "label": rows["label"].to_numpy(), "fold": rows["fold"].to_numpy()})
    for c, name in enumerate(classes):
        oof[f"prob_{name}"] = probs[:, c]
    order = np.argsort(indices, kind="stable")
    return oof.iloc[order].reset_index(drop=True)


def checkpoint_meta(cfg: Config, classes: list[str], fold: int | str, epoch: int, score: float | None) -> dict:
    return {
        "model": cfg.model.name, "model_kwargs": cfg.model.kwargs, "classes": classes,
        "image_size": cfg.data.image_size, "mean": cfg.data.mean, "std": cfg.data.std,
        "competition": cfg.data.competition, "exp": cfg.trainer.exp, "fold": fold, "epoch": epoch,
        "metric": cfg.trainer.best_metric, "score": score, "config": config_to_dict(cfg),
    }


def epoch_line(fold: int | str, epochs: int, r: dict, best_metric: str) -> str:
    parts = [f"{fold_name(fold)} epoch {r['epoch']}/{epochs}", f"train loss {r['train_loss']:.4f}"]
    for key in ("val_loss", "val_accuracy", "val_log_loss", "val_f1_macro", f"val_ema_{best_metric}"):
        if key in r:
            parts.append(f"{key[4:]} {r[key]:.4f}")
    parts += [f"lr {r['lr']:.2e}", f"{r['images_per_s']:.0f} img/s", f"{r['epoch_seconds']:.1f}s"]
    return " | ".join(parts)


def tracker_summary(accelerator: Accelerator, summary: dict) -> None:
    run = accelerator.get_tracker("wandb", unwrap=True) if accelerator.log_with else None
    if run is not None and hasattr(run, "summary"):
        best = summary.get("best") or {}
        run.summary.update({f"best/{k}": v for k, v in best.items()} | {"oof_" + summary["best_metric"]: summary["best_score"]})


def aggregate_cv(out: Path) -> dict[str, Any] | None:
    """oof.csv over every finished fold and cv.json (per-fold and mean ± std of every metric)."""
    finished = sorted(p.parent for p in out.glob("fold[0-9]*/summary.json"))
    if not finished:
        return None
    oof = pd.concat([pd.read_csv(f / "oof.csv") for f in finished if (f / "oof.csv").exists()], ignore_index=True)
    per_fold = {}
    for f in finished:
        best = json.loads((f / "summary.json").read_text()).get("best") or {}
        per_fold[f.name] = {k[4:]: v for k, v in best.items() if k.startswith("val_")}
    metrics = sorted({k for m in per_fold.values() for k in m})
    cv = {
        "folds": list(per_fold),
        "per_fold": per_fold,
        "mean": {k: float(np.mean([m[k] for m in per_fold.values() if k in m])) for k in metrics},
        "std": {k: float(np.std([m[k] for m in per_fold.values() if k in m])) for k in metrics},
    }
    prob_cols = [c for c in oof.columns if c.startswith("prob_")]
    classes = [c[5:] for c in prob_cols]
    targets = oof["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    probs = oof[prob_cols].to_numpy()
    probs = probs / probs.sum(1, keepdims=True)  # undo the CSV's rounding
    cv["oof"] = classification_metrics(probs, targets) | {"images": len(oof)}
    write_csv(oof, out / "oof.csv")
    write_json(cv, out / "cv.json")
    return cv


def train(cfg: Config) -> dict[str, Any] | None:
    """Train every requested fold of the experiment, then write its cross-validation summary."""
    reuse_freed_cpu_memory()
    available = sorted(int(f) for f in read_folds(Path(cfg.data.folds_csv))["fold"].unique())
    for fold in folds_to_train(cfg, available):
        train_fold(cfg, fold)
    PartialState().destroy_process_group()
    if not PartialState().is_main_process:
        return None
    cv = aggregate_cv(run_dir(cfg))
    if cv is not None:
        mean, std = cv["mean"], cv["std"]
        line = ", ".join(f"{k} {mean[k]:.4f} ± {std[k]:.4f}" for k in ("accuracy", "log_loss", "f1_macro") if k in mean)
        print(f"CV over {len(cv['folds'])} fold(s) of {cfg.trainer.exp}: {line}; OOF accuracy {cv['oof']['accuracy']:.4f}"
              f" on {cv['oof']['images']} images → {run_dir(cfg) / 'cv.json'}")
    return cv


def parse_args(argv: list[str] | None = None) -> tuple[Config, list[str]]:
    import argparse

    parser = argparse.ArgumentParser(
        prog="train.py", description="Train an experiment's folds (run with `accelerate launch train.py …`)."
    )
    parser.add_argument("--config", required=True, help="configs/<competition>/<exp>.yaml")
    parser.add_argument("--fold", default=None, help="one fold index, or 'all' to train on every image")
    parser.add_argument("--resume", action="store_true", help="continue from the last saved epoch; skip finished folds")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. trainer.epochs=3 data.batch_size=32")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after --fold
    overrides = list(args.overrides)
    if args.fold is not None:
        overrides.append(f"trainer.fold={args.fold}")
    if args.resume:
        overrides.append("trainer.resume=true")
    return load_config(args.config, overrides), overrides


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, _ = parse_args(argv)
        if int(os.environ.get("RANK", "0")) == 0:
            print(format_config(cfg))
        train(cfg)
        return 0
    except CompetitionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
