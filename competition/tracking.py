"""Weights & Biases through Accelerate's tracker: one run per fold, offline unless a key is set, never a prompt."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from competition.config import TrackingConfig


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(cfg: TrackingConfig) -> str:
    """online with credentials, offline without (synced later with `wandb sync`), or as configured."""
    if not cfg.wandb or cfg.mode == "disabled":
        return "disabled"
    if os.environ.get("WANDB_MODE") in ("offline", "online", "disabled"):
        return os.environ["WANDB_MODE"]
    if cfg.mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return cfg.mode


def wandb_init_kwargs(
    cfg: TrackingConfig, name: str, group: str, job_type: str, run_dir: Path
) -> dict[str, Any]:
    """Keyword arguments for `wandb.init` (via `accelerator.init_trackers(init_kwargs={"wandb": …})`)."""
    mode = wandb_mode(cfg)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_MODE"] = mode  # wandb reads it before any login prompt could appear
    run_dir.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {
        "name": name,
        "group": group,
        "job_type": job_type,
        "dir": str(run_dir),
        "mode": mode,
        "tags": list(cfg.tags),
        "reinit": "finish_previous",
    }
    if cfg.entity:
        kwargs["entity"] = cfg.entity
    return kwargs
