"""Run configuration: a YAML file mapped onto typed dataclasses, plus `section.key=value` overrides.

Precedence, lowest first: dataclass defaults < YAML file < command-line overrides (applied in order,
so a later override wins). Every value is type-checked on the way in, and every mistake is a
`CompetitionError` naming the key, where it came from and what would have been accepted.

YAML is read with a safe loader that follows YAML 1.2 for the two rules that bite configs:
only true/false are booleans (so `mixed_precision: no` stays the string Accelerate expects), and
`1e-3` is a float (PyYAML's YAML 1.1 rules would make it a string).

`load_config` returns a *resolved* config (see `resolve_paths`): data_dir, folds_csv and exp are
never None afterwards, so a saved config records exactly what a run used.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from competition.errors import CompetitionError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class DataConfig:
    competition: str = "dogs-vs-cats"
    data_dir: str | None = None  # None -> inputs/<competition>, relative to the working directory
    folds_csv: str | None = None  # None -> folds/<competition>.csv
    image_size: int = 128  # pixels; square side fed to the model
    resize: str = "resize"  # train-time geometry: "resize" | "random_resized_crop" | "pad_crop"
    scale_min: float = 0.35  # lower area-scale bound for random_resized_crop
    pad: int = 4  # pixels of padding before the random crop in pad_crop
    hflip: bool = True
    coarse_dropout: float = 0.0  # probability of applying CoarseDropout to a training image
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))  # per channel, on 0..1 pixels
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    batch_size: int = 64  # per process; the global batch is batch_size * processes * grad_accum_steps
    eval_batch_size: int | None = None  # None -> batch_size
    # DataLoader workers per process; None -> 0 on a CPU, one per spare core (at most 8) on CUDA (data.resolve_num_workers)
    num_workers: int | None = None
    cache_dir: str = ".cache/images"  # decoded, resized images are cached here between runs
    in_memory: bool = False  # hold the decoded dataset in RAM (small competitions only)
    # Extra labelled training images from another competition's data (external data, as Kaggle rules allow it):
    # {competition: cifar-10, data_dir: DIR, classes: {their class: our class, …}}. They join the training set of
    # every fold and never a validation set, so CV still scores only this competition's images.
    extra_train: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    name: str = "custom/resnet18"  # "custom/<arch>" for the project's models, otherwise a timm name
    pretrained: str | None = None  # weights to start from (path or tag); None -> random init
    kwargs: dict = field(default_factory=dict)  # extra create_model kwargs, e.g. {stem: cifar}
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    drop_rate: float = 0.0  # dropout before the classifier


@dataclass
class OptimizerConfig:
    name: str = "sgd"  # "sgd" | "adamw"
    lr: float = 0.1  # peak learning rate, reached after warmup
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw only


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # "multistep" | "cosine" | "onecycle" | "constant"
    warmup_epochs: float = 0.0  # linear warmup length; fractional epochs allowed
    milestones: list[float] = field(default_factory=lambda: [5.0, 7.5])  # multistep: in epochs, e.g. [30, 60]
    gamma: float = 0.1  # multistep: lr factor at each milestone
    min_lr_ratio: float = 0.0  # cosine: final lr as a fraction of the peak lr
    pct_start: float = 0.25  # onecycle: fraction of training spent increasing the lr


@dataclass
class TrainerConfig:
    epochs: int = 10
    seed: int = 42
    # "auto" (bf16 where supported, else fp16 on GPU, else no) | "no" | "fp16" | "bf16"
    mixed_precision: str = "auto"
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None  # None -> no clipping
    label_smoothing: float = 0.0
    class_weights: list[float] | str | None = None  # "balanced" (inverse frequency) or one weight per class
    mixup_alpha: float = 0.0  # 0 disables mixup
    cutmix_alpha: float = 0.0  # 0 disables cutmix
    mixup_prob: float = 1.0  # probability a batch is mixed at all when mixup/cutmix is on
    ema: bool = False  # keep an exponential moving average of the weights and evaluate it
    ema_decay: float = 0.999  # per optimizer step
    best_metric: str = "accuracy"  # validation metric that picks the checkpoint kept as best
    best_mode: str = "max"  # "max" | "min": whether a larger best_metric is better
    # A fold index, "all" (train on every image, no validation), or None -> each fold in turn.
    fold: str | int | None = None
    folds: list[int] | None = None  # with fold=None: only these folds; None -> every fold in folds_csv
    output_dir: str = "runs"  # runs go to <output_dir>/<exp>/
    exp: str | None = None  # experiment name; None -> the config file's stem
    resume: bool = False  # continue from the last checkpoint in the run directory
    deterministic: bool = True  # cudnn deterministic algorithms: reproducible, slightly slower
    log_every: int = 10  # optimizer steps between logged training metrics
    limit_train_batches: int | None = None  # stop each epoch after this many batches (debugging, benchmarks)
    eval_every: int = 1  # epochs between validations


@dataclass
class TrackingConfig:
    wandb: bool = True
    project: str = "competition"
    entity: str | None = None  # None -> the logged-in user's default entity
    # "auto" (online if WANDB_API_KEY is set or logged in, else offline) | "offline" | "online" | "disabled"
    mode: str = "auto"
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Top-level override names for the keys changed most often on the command line: `epochs=3`.
SHORTCUTS: dict[str, str] = {
    "epochs": "trainer.epochs",
    "fold": "trainer.fold",
    "resume": "trainer.resume",
    "seed": "trainer.seed",
    "lr": "optimizer.lr",
    "batch_size": "data.batch_size",
    "image_size": "data.image_size",
    "model": "model.name",
}

# Allowed values of string settings; for union fields (fold, class_weights) they apply to the string form only.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.resize": ("resize", "random_resized_crop", "pad_crop"),
    "optimizer.name": ("sgd", "adamw"),
    "scheduler.name": ("multistep", "cosine", "onecycle", "constant"),
    "trainer.mixed_precision": ("auto", "no", "fp16", "bf16"),
    "trainer.best_mode": ("max", "min"),
    "trainer.fold": ("all",),
    "trainer.class_weights": ("balanced",),
    "tracking.mode": ("auto", "offline", "online", "disabled"),
}

CLI = "command line"  # the `source` named in errors about overrides

_BOOL_TAG = "tag:yaml.org,2002:bool"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# Floats with an exponent but no dot (1e-3, 5E4), which YAML 1.1 leaves as strings.
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (true/false only) and exponent floats."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(_FLOAT_TAG, _EXP_FLOAT, list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """SafeDumper that also quotes strings like '1e-3', so that both _Loader and yaml.safe_load read them back."""


_Dumper.add_implicit_resolver(_FLOAT_TAG, _EXP_FLOAT, list("-+0123456789"))
# Lists inline (`betas: [0.9, 0.999]`) read better than one item per line; sections stay block style.
_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# ---------------------------------------------------------------------------------------------- type checks


class _Mismatch(Exception):
    """Raised internally when a value does not fit a type; turned into a CompetitionError by the caller."""


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp` (ints widen to float, tuples to lists), or raise _Mismatch."""
    if _is_union(tp):
        for arm in typing.get_args(tp):
            try:
                return _coerce(value, arm)
            except _Mismatch:
                pass
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if typing.get_origin(tp) is list:
        # A string is a sequence too, but `tags: fast` is almost surely a mistake for `tags: [fast]`.
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        (item,) = typing.get_args(tp)
        return [_coerce(v, item) for v in value]
    if tp is dict or typing.get_origin(tp) is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return copy.deepcopy(dict(value))
    # bool is a subclass of int: `epochs: true` must not pass as 1.
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, str):
        return value
    raise _Mismatch


def _type_name(tp: Any) -> str:
    if _is_union(tp):
        return " or ".join(_type_name(arm) for arm in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is list:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if tp is dict or typing.get_origin(tp) is dict:
        return "mapping"
    return tp.__name__


def _accepts_str(tp: Any) -> bool:
    return tp is str or (_is_union(tp) and str in typing.get_args(tp))


_SECTIONS: dict[str, type] = typing.get_type_hints(Config)
_HINTS: dict[type, dict[str, Any]] = {cls: typing.get_type_hints(cls) for cls in _SECTIONS.values()}


def _suggest(name: str, valid: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _section(cfg: Config, name: str, source: str) -> Any:
    if name not in _SECTIONS:
        raise CompetitionError(
            f"{source}: unknown section '{name}'{_suggest(name, list(_SECTIONS))}; "
            f"valid sections: {', '.join(_SECTIONS)}"
        )
    return getattr(cfg, name)


def _field_type(section_name: str, section: Any, key: str, source: str) -> Any:
    hints = _HINTS[type(section)]
    if key not in hints:
        raise CompetitionError(
            f"{source}: unknown key '{section_name}.{key}'{_suggest(key, list(hints))}; "
            f"valid keys in '{section_name}': {', '.join(hints)}"
        )
    return hints[key]


def _set(section_name: str, section: Any, key: str, value: Any, source: str, raw: str | None = None) -> None:
    """Type-check `value` and store it. `raw` is the override's text, for the string fallback below."""
    name = f"{section_name}.{key}"
    tp = _field_type(section_name, section, key, source)
    try:
        value = _coerce(value, tp)
    except _Mismatch:
        # On the command line `trainer.exp=2024` or `tracking.project=yes` mean the text itself;
        # quoting it for YAML through a shell is too awkward to ask for.
        scalar = isinstance(value, (bool, int, float))
        if raw is not None and scalar and _accepts_str(tp) and name not in CHOICES:
            value = raw
        else:
            raise CompetitionError(
                f"{source}: '{name}' expects {_type_name(tp)}, got {value!r} ({type(value).__name__})"
            ) from None
    if isinstance(value, str) and name in CHOICES and value not in CHOICES[name]:
        raise CompetitionError(f"{source}: '{name}' must be one of {', '.join(CHOICES[name])}; got {value!r}")
    setattr(section, key, value)


# ---------------------------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CompetitionError(f"config file not found: {path}") from None
    except OSError as e:
        raise CompetitionError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        return _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise CompetitionError(f"{where}: invalid YAML: {problem}") from None


def _apply_mapping(cfg: Config, data: Any, source: str) -> None:
    if data is None:  # an empty file: all defaults
        return
    if not isinstance(data, Mapping):
        raise CompetitionError(
            f"{source}: expected a mapping of sections ({', '.join(_SECTIONS)}), got {type(data).__name__}"
        )
    for section_name, values in data.items():
        section = _section(cfg, str(section_name), source)
        if values is None:  # `trainer:` with nothing under it
            continue
        if not isinstance(values, Mapping):
            raise CompetitionError(
                f"{source}: section '{section_name}' must be a mapping of key: value, got {values!r}"
            )
        for key, value in values.items():
            _set(str(section_name), section, str(key), value, source)


def _apply_override(cfg: Config, item: str) -> None:
    key, sep, raw = item.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise CompetitionError(
            f"{CLI}: override {item!r} is not of the form section.key=value (e.g. trainer.epochs=3 or epochs=3)"
        )
    if "." not in key:
        if key not in SHORTCUTS:
            names = [*SHORTCUTS, *_SECTIONS]
            raise CompetitionError(
                f"{CLI}: unknown setting '{key}'{_suggest(key, names)}; use section.key=value "
                f"(sections: {', '.join(_SECTIONS)}) or a shortcut: {', '.join(SHORTCUTS)}"
            )
        key = SHORTCUTS[key]
    try:
        value = _yaml_load(raw)
    except yaml.YAMLError as e:
        raise CompetitionError(
            f"{CLI}: cannot parse the value of '{key}' as YAML: {getattr(e, 'problem', None) or e}"
        ) from None

    section_name, field_name, *subkeys = key.split(".")
    section = _section(cfg, section_name, CLI)
    if not field_name:
        raise CompetitionError(f"{CLI}: override {item!r} names no key; expected section.key=value")
    if not subkeys:
        _set(section_name, section, field_name, value, CLI, raw)
        return
    # model.kwargs.stem=cifar: set one entry inside a mapping field, keeping its other entries.
    tp = _field_type(section_name, section, field_name, CLI)
    if not (tp is dict or typing.get_origin(tp) is dict):
        raise CompetitionError(
            f"{CLI}: '{section_name}.{field_name}' is {_type_name(tp)}, not a mapping; cannot set '{key}'"
        )
    mapping = copy.deepcopy(getattr(section, field_name))
    node = mapping
    for sub in subkeys[:-1]:
        if not isinstance(node.get(sub), dict):
            node[sub] = {}
        node = node[sub]
    node[subkeys[-1]] = value
    setattr(section, field_name, mapping)


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at `path` (if any), then `overrides`; returned resolved (see resolve_paths)."""
    cfg = Config()
    if path is not None:
        _apply_mapping(cfg, _read_yaml(Path(path)), str(path))
    for item in [overrides] if isinstance(overrides, str) else overrides:
        _apply_override(cfg, item)
    return resolve_paths(cfg, path)


def resolve_paths(cfg: Config, config_path: str | os.PathLike | None = None) -> Config:
    """A copy of `cfg` with data_dir, folds_csv and exp filled where they are None.

    data_dir -> inputs/<competition>, folds_csv -> folds/<competition>.csv, exp -> the stem of
    `config_path`, or the competition name without one. Explicit values are kept, so resolving twice,
    or reloading a saved config from another file name, changes nothing.
    """
    cfg = copy.deepcopy(cfg)
    competition = cfg.data.competition
    if cfg.data.data_dir is None:
        cfg.data.data_dir = f"inputs/{competition}"
    if cfg.data.folds_csv is None:
        cfg.data.folds_csv = f"folds/{competition}.csv"
    if cfg.trainer.exp is None:
        cfg.trainer.exp = Path(config_path).stem if config_path is not None else competition
    return cfg


# ---------------------------------------------------------------------------------------------- saving


def _plain(value: Any) -> Any:
    """Tuples (possible when a Config is built in code) to lists, so that safe_dump can write them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict, sections and keys in declaration order (data, model, ..., tracking)."""
    return _plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write `cfg` as plain YAML that load_config reads back into an equal Config.

    Atomic (temporary file beside `path`, then os.replace) so that a crash never leaves half a config
    in a run directory. Not via competition.atomic, which imports pandas: loading a config stays light.
    """
    path = Path(path)
    text = yaml.dump(
        config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def format_config(cfg: Config) -> str:
    """One line per section, `key=value` pairs, for the top of a log."""
    return "\n".join(
        f"{section}: " + ", ".join(f"{key}={value}" for key, value in values.items())
        for section, values in config_to_dict(cfg).items()
    )
