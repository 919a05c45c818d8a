"""Best-epoch checkpoints: weights in safetensors, with everything needed to use them in the metadata.

A `best.safetensors` loads without its run's config: the model name, its kwargs, the class list and
the preprocessing travel with the weights (as timm's checkpoints carry their config).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from competition.atomic import atomic_path
from competition.errors import CompetitionError
from competition.models import clean_state_dict


def save_checkpoint(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    """Write weights + JSON-encoded metadata atomically."""
    metadata = {key: json.dumps(value) for key, value in meta.items()}
    state = {k: v.detach().contiguous().cpu() for k, v in clean_state_dict(model.state_dict()).items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CompetitionError(f"Checkpoint not found: {path}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise CompetitionError(f"{path} is not a readable safetensors checkpoint ({e}); retrain that fold.") from e
    meta = {key: json.loads(value) for key, value in raw.items()}
    if "model" not in meta or "classes" not in meta:
        raise CompetitionError(f"{path} lacks the model name or class list in its metadata: not a checkpoint of this project.")
    return meta


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model a checkpoint describes, with its weights loaded, in eval mode, and its metadata."""
    from safetensors.torch import load_file

    from competition.models import create_model

    meta = read_checkpoint_meta(path)
    model = create_model(meta["model"], num_classes=len(meta["classes"]), **meta.get("model_kwargs", {}))
    state = load_file(str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CompetitionError(f"{path}: weights do not fit {meta['model']} with {len(meta['classes'])} classes: {e}") from e
    return model.eval(), meta


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
