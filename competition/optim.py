"""Optimizers without weight decay on norms and biases, and learning-rate schedules with warmup.

Schedules are functions of the optimizer step, so they stay correct under gradient accumulation and
give the same curve over an epoch whatever the number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from competition.config import OptimizerConfig, SchedulerConfig

ONECYCLE_START_DIV = 25.0  # onecycle starts at lr / 25 …
ONECYCLE_END_DIV = 1e4  # … and ends at lr / 1e4, as torch's OneCycleLR


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    # Decaying BN scales and biases only fights the normalisation; timm's helper leaves 1-d params out.
    groups = param_groups_weight_decay(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))


def lr_factor(cfg: SchedulerConfig, total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate after `step` optimizer steps, as a fraction of the peak.

    Computed on the epoch clock (step / steps_per_epoch), so that the curve over epochs is the same
    whatever the batch count per process: 1 process and 2 processes reach each lr at the same epoch.
    """
    epochs = total_steps / steps_per_epoch
    warmup = cfg.warmup_epochs

    def factor(step: int) -> float:
        e = step / steps_per_epoch
        if cfg.name == "onecycle":
            peak = warmup or cfg.pct_start * epochs
            if e < peak:
                start = 1 / ONECYCLE_START_DIV
                return start + (1 - start) * (1 - math.cos(math.pi * e / peak)) / 2
            t = min(1.0, (e - peak) / max(epochs - peak, 1e-12))
            end = 1 / ONECYCLE_END_DIV
            return end + (1 - end) * (1 + math.cos(math.pi * t)) / 2
        if e < warmup:
            return (step + 1) / (warmup * steps_per_epoch + 1)
        if cfg.name == "multistep":
            return cfg.gamma ** sum(e >= m for m in cfg.milestones)
        if cfg.name == "cosine":
            t = min(1.0, (e - warmup) / max(epochs - warmup, 1e-12))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * (1 + math.cos(math.pi * t)) / 2
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps, steps_per_epoch))
