"""One entry point for every model: ``create_model("custom/resnet50" | "timm/<arch>", ...)``.

Also the checkpoint loading the rest of the project reuses (``load_state_dict_file``,
``clean_state_dict``) and the ``models`` command's table / layer summary.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from competition.errors import CompetitionError
from competition.models import resnet, resnet9

logger = logging.getLogger(__name__)

CUSTOM_PREFIX = "custom/"
TIMM_PREFIX = "timm/"

# name -> (builder, default num_classes for the table / summary, input size it is designed for)
_IMAGENET_INPUT = "224x224 (ImageNet stem)"
_CIFAR_INPUT = "32x32 (CIFAR)"
_CUSTOM: dict[str, tuple[Callable[..., nn.Module], int, str]] = {
    "resnet18": (resnet.resnet18, 1000, _IMAGENET_INPUT),
    "resnet34": (resnet.resnet34, 1000, _IMAGENET_INPUT),
    "resnet50": (resnet.resnet50, 1000, _IMAGENET_INPUT),
    "resnet101": (resnet.resnet101, 1000, _IMAGENET_INPUT),
    "resnet152": (resnet.resnet152, 1000, _IMAGENET_INPUT),
    "resnet20": (resnet.resnet20, 10, _CIFAR_INPUT),
    "resnet32": (resnet.resnet32, 10, _CIFAR_INPUT),
    "resnet44": (resnet.resnet44, 10, _CIFAR_INPUT),
    "resnet56": (resnet.resnet56, 10, _CIFAR_INPUT),
    "resnet110": (resnet.resnet110, 10, _CIFAR_INPUT),
    "resnet9": (resnet9.resnet9, 10, _CIFAR_INPUT + "; stem_stride=2 for 64-128 px"),
}
_CIFAR_ARCHS = {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110"}

# A short, known-good menu for `competition models`; any timm_resnet_family() name is accepted.
_CURATED_TIMM = [
    "resnet18",
    "resnet18d",
    "resnet26d",
    "resnet34",
    "resnet34d",
    "resnet50",
    "resnet50d",
    "resnext50_32x4d",
    "seresnext26d_32x4d",
    "seresnext50_32x4d",
    "resnetrs50",
]
_TIMM_FAMILY_PATTERNS = ["resnet*", "resnext*", "seresnet*", "seresnext*", "resnetrs*", "resnetv2*"]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
_SAFETENSORS_SUFFIX = ".safetensors"
# Wrappers added by DataParallel/DDP/Accelerate and by torch.compile, respectively.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


# --- names ------------------------------------------------------------------------------------


def timm_resnet_family() -> list[str]:
    """Every timm architecture accepted as ``timm/<arch>`` (the ResNet family)."""
    return list(_timm_family())


@functools.cache
def _timm_family() -> tuple[str, ...]:
    # timm's registry is fixed once imported; name checks happen on every create_model call.
    import timm

    return tuple(sorted(timm.list_models(_TIMM_FAMILY_PATTERNS)))


def list_models() -> list[str]:
    """All custom models plus a curated selection of timm ResNet-family models."""
    return [CUSTOM_PREFIX + a for a in _CUSTOM] + [TIMM_PREFIX + a for a in _CURATED_TIMM]


@dataclass(frozen=True)
class _Spec:
    name: str  # as the user wrote it, for messages
    source: str  # "custom" | "timm"
    arch: str  # without the prefix; may carry a timm pretrained tag ("resnet50.a1_in1k")


def _unknown_name(name: str, candidates: Iterable[str], why: str) -> CompetitionError:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    custom = ", ".join(CUSTOM_PREFIX + a for a in _CUSTOM)
    return CompetitionError(
        f"Unknown model {name!r}: {why}.{hint}\n"
        f"Valid custom models: {custom}.\n"
        f"Also accepted: timm/<arch> for any architecture in timm's ResNet family "
        f"({', '.join(_TIMM_FAMILY_PATTERNS)}), e.g. timm/resnet50d; "
        f"`python -m competition models` lists a selection."
    )


def _resolve(name: str) -> _Spec:
    if name.startswith(CUSTOM_PREFIX):
        arch = name[len(CUSTOM_PREFIX) :]
        if arch not in _CUSTOM:
            raise _unknown_name(name, [CUSTOM_PREFIX + a for a in _CUSTOM], f"there is no custom {arch!r}")
        return _Spec(name, "custom", arch)
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX) :]
        family = _timm_family()
        # A pretrained tag ("resnet50.a1_in1k") selects weights, not an architecture.
        if arch.split(".", 1)[0] not in family:
            raise _unknown_name(
                name, [TIMM_PREFIX + a for a in family], f"{arch!r} is not in timm's ResNet family"
            )
        return _Spec(name, "timm", arch)
    candidates = [CUSTOM_PREFIX + a for a in _CUSTOM] + [TIMM_PREFIX + a for a in _CURATED_TIMM]
    # Users often forget the prefix: suggest against bare names too.
    prefixed = [c for c in candidates if c.split("/", 1)[1] == name]
    if prefixed:
        raise _unknown_name(name, [], f"a source prefix is required: {' or '.join(prefixed)}")
    raise _unknown_name(name, candidates, "names start with 'custom/' or 'timm/'")


# --- building ---------------------------------------------------------------------------------


def _custom_options(arch: str) -> set[str]:
    model_class = resnet9.ResNet9 if arch == "resnet9" else resnet.ResNet
    options = set(inspect.signature(model_class).parameters) - {
        "block",
        "layers",
        "num_classes",
        "in_chans",
    }
    if arch in _CIFAR_ARCHS:
        options.discard("width")  # fixed at 16 by the paper's design
    return options


def _build_custom(spec: _Spec, num_classes: int, in_chans: int, kwargs: dict) -> nn.Module:
    allowed = _custom_options(spec.arch)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise CompetitionError(
            f"{spec.name} does not accept option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(sorted(allowed))}."
        )
    builder = _CUSTOM[spec.arch][0]
    try:
        return builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except ValueError as err:
        raise CompetitionError(f"Cannot build {spec.name}: {err}") from err


def _build_timm(spec: _Spec, num_classes: int, in_chans: int, kwargs: dict, pretrained: bool) -> nn.Module:
    import timm

    if pretrained:
        return _create_timm_pretrained_offline(spec, num_classes, in_chans, kwargs)
    try:
        return timm.create_model(
            spec.arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
    except TypeError as err:
        raise CompetitionError(f"Cannot build {spec.name} with options {sorted(kwargs)}: {err}") from err


@contextmanager
def _hf_hub_offline() -> Iterator[None]:
    """Force huggingface_hub to the local cache: never reach the network.

    huggingface_hub reads HF_HUB_OFFLINE once, at import, so the already-imported constant is
    patched as well as the environment (the latter for anything imported later).
    """
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    old_const = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_const


def _weights_unavailable(spec: _Spec, reason: str) -> CompetitionError:
    return CompetitionError(
        f"Pretrained weights for {spec.name} are not available offline ({reason}). "
        f"Download them on a machine with network access (e.g. timm.create_model({spec.arch!r}, "
        f"pretrained=True) then torch.save(model.state_dict(), 'weights.pth')), copy the file here "
        f"and pass pretrained=/path/to/weights.pth (model.pretrained=/path/to/weights.pth in the config)."
    )


def _create_timm_pretrained_offline(spec: _Spec, num_classes: int, in_chans: int, kwargs: dict) -> nn.Module:
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise _weights_unavailable(spec, "timm knows no pretrained weights for it")
    if not cfg.hf_hub_id and cfg.url and not cfg.file:
        # URL-only weights go through torch.hub, which HF_HUB_OFFLINE does not cover: only use
        # them when already downloaded, so that this never blocks on the network.
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if not cached.is_file():
            raise _weights_unavailable(spec, f"not in the torch hub cache {cached.parent}")
    try:
        with _hf_hub_offline():
            return timm.create_model(
                spec.arch, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs
            )
    except TypeError as err:  # a bad option, not missing weights
        raise CompetitionError(f"Cannot build {spec.name} with options {sorted(kwargs)}: {err}") from err
    except Exception as err:  # timm/hf raise assorted OSError/RuntimeError/ValueError subclasses
        raise _weights_unavailable(spec, f"{type(err).__name__}: {err}") from err


def create_model(
    name: str,
    num_classes: int,
    pretrained: str | os.PathLike | bool | None = None,
    in_chans: int = 3,
    channels_last: bool = False,
    compile: bool = False,
    **kwargs,
) -> nn.Module:
    """Build ``custom/<arch>`` or ``timm/<arch>``, optionally loading weights from a file.

    ``pretrained``: a ``.pth/.pt/.bin/.safetensors`` path (any model), ``True`` (timm models,
    local hub cache only) or ``None``/``False``. Extra ``kwargs`` go to the model constructor
    (custom: stem, zero_init_residual, include_top, features_only, width).
    """
    spec = _resolve(name)
    if num_classes < 1:
        raise CompetitionError(
            f"num_classes must be >= 1 for {name}, got {num_classes} "
            f"(for a model without classifier pass include_top=False / features_only=True)."
        )
    if pretrained == "":
        pretrained = None
    if pretrained is True and spec.source == "custom":
        raise CompetitionError(
            f"{name} has no downloadable weights: pass pretrained=/path/to/weights.pth "
            f"(model.pretrained=... in the config), e.g. a torchvision {spec.arch} state dict."
        )

    if spec.source == "custom":
        model = _build_custom(spec, num_classes, in_chans, kwargs)
    else:
        model = _build_timm(spec, num_classes, in_chans, kwargs, pretrained=pretrained is True)

    if pretrained is not None and not isinstance(pretrained, bool):
        load_pretrained_file(model, pretrained, model_name=name)

    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model


# --- checkpoints ------------------------------------------------------------------------------


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.pth/.pt/.bin`` (weights only) or ``.safetensors``, on CPU.

    Training checkpoints that wrap the weights under ``"state_dict"`` or ``"model"`` are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CompetitionError(f"Checkpoint file not found: {path}. Check the path given as pretrained=.")
    suffix = path.suffix.lower()
    if suffix == _SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
            raise CompetitionError(f"Cannot read {path} as safetensors: {err}") from err
    if suffix not in _TORCH_SUFFIXES:
        raise CompetitionError(
            f"Unsupported checkpoint type {path.name!r}: use one of "
            f"{', '.join(_TORCH_SUFFIXES + (_SAFETENSORS_SUFFIX,))}."
        )
    try:
        # weights_only: a checkpoint is data, never code to execute.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CompetitionError(
            f"Cannot read {path} as a PyTorch state dict (loaded with weights_only=True): {err}"
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise CompetitionError(
            f"{path} does not contain a state dict (a mapping of parameter names to tensors, "
            f"optionally under 'state_dict' or 'model'); save one with torch.save(model.state_dict(), path)."
        )
    return dict(obj)


def clean_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip DDP/Accelerate (``module.``) and torch.compile (``_orig_mod.``) prefixes, in any nesting."""
    cleaned = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    stripped = True
        cleaned[key] = value
    return cleaned


def _cfg_get(model: nn.Module, key: str, default: str) -> str:
    # timm models describe their first conv / classifier in pretrained_cfg; ours use torchvision's names.
    cfg = getattr(model, "pretrained_cfg", None) or {}
    value = cfg.get(key) or default
    return value[0] if isinstance(value, list | tuple) else value


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _reset_module(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def _fit_classifier(
    state_dict: dict[str, Tensor], target: Mapping[str, Tensor], model: nn.Module, where: str
) -> tuple[set[str], str | None]:
    """Drop the checkpoint's classifier when the model has none or one with another class count.

    Returns the model keys allowed to stay missing and the warning to give once the rest of the
    checkpoint is known to fit. A classifier that differs in more than its class count (other
    feature width) is left in place, so that it is reported as the architecture mismatch it is.
    """
    head = _cfg_get(model, "classifier", "fc")
    ckpt_head = [k for k in state_dict if _under(k, head)]
    model_head = [k for k in target if _under(k, head)]
    if not model_head:
        # include_top=False / features_only: nothing to load the classifier into.
        for k in ckpt_head:
            del state_dict[k]
        return set(), None
    if not ckpt_head:
        return set(model_head), f"{where} has no classifier ({head}.*): keeping it randomly initialised."
    shapes = [(state_dict[k].shape, target[k].shape) for k in ckpt_head if k in target]
    if all(a == b for a, b in shapes) or not all(a[1:] == b[1:] for a, b in shapes):
        return set(), None
    ckpt_classes, model_classes = shapes[0][0][0], shapes[0][1][0]
    for k in ckpt_head:
        del state_dict[k]
    return set(model_head), (
        f"{where}: classifier has {ckpt_classes} outputs but the model has {model_classes} classes; "
        f"dropped {head}.* from the checkpoint and re-initialised the classifier (train it before predicting)."
    )


def _fit_input_conv(
    state_dict: dict[str, Tensor], target: Mapping[str, Tensor], model: nn.Module
) -> str | None:
    """Adapt a 3-channel first conv to the model's in_chans, as timm does for pretrained weights."""
    from timm.models import adapt_input_conv

    key = _cfg_get(model, "first_conv", "conv1") + ".weight"
    if key not in state_dict or key not in target:
        return None
    weight, want = state_dict[key], target[key]
    if weight.ndim != 4 or weight.shape[1] == want.shape[1] or weight.shape[1] != 3:
        return None
    state_dict[key] = adapt_input_conv(want.shape[1], weight)
    return f"adapted {key} from 3 to {want.shape[1]} input channels"


def _examples(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def load_pretrained_file(model: nn.Module, path: str | os.PathLike, model_name: str = "the model") -> None:
    """Load a state-dict file into ``model``, adapting only the classifier and the input conv.

    Anything else that does not match exactly is an error naming the model, file and keys.
    """
    where = str(path)
    state_dict = clean_state_dict(load_state_dict_file(path))
    target = model.state_dict()
    may_miss, head_note = _fit_classifier(state_dict, target, model, where)
    conv_note = _fit_input_conv(state_dict, target, model)

    # Old checkpoints lack BN's num_batches_tracked; BatchNorm fills it in itself.
    missing = [
        k
        for k in target
        if k not in state_dict and k not in may_miss and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state_dict if k not in target]
    shapes = [
        f"{k} (file {tuple(v.shape)} vs model {tuple(target[k].shape)})"
        for k, v in state_dict.items()
        if k in target and v.shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing keys, e.g. {_examples(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys, e.g. {_examples(unexpected)}")
        if shapes:
            problems.append(f"{len(shapes)} shape mismatches, e.g. {_examples(shapes, 3)}")
        raise CompetitionError(
            f"Checkpoint {where} does not fit model {model_name}: {'; '.join(problems)}. "
            f"Was it saved from a different architecture? Pass weights saved from {model_name} "
            f"(or the matching torchvision/timm model)."
        )

    if may_miss:
        # Explicit, so the classifier is fresh even if this model had been trained before.
        _reset_module(model.get_submodule(_cfg_get(model, "classifier", "fc")))
        logger.warning(head_note)
    if conv_note:
        logger.info("%s: %s.", where, conv_note)
    model.load_state_dict(state_dict, strict=False)


# --- inspection -------------------------------------------------------------------------------


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _format_table(headers: list[str], rows: list[list[str]], right: Iterable[int] = ()) -> str:
    right = set(right)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


_SUMMARY_CONTAINER = re.compile(r"^(layer\d+(\.\d+)?|stages\.\d+(\.blocks\.\d+)?)$")


def _shape_str(out: object) -> str:
    if isinstance(out, Tensor):
        return str(tuple(out.shape))
    if isinstance(out, list | tuple):
        return "[" + ", ".join(_shape_str(o) for o in out) + "]"
    return type(out).__name__


def layer_summary(model: nn.Module, input_size: tuple[int, int, int]) -> str:
    """A layer-by-layer table of one eval-mode forward pass of a random (1, C, H, W) input.

    Rows are leaf modules and stages/blocks (whose #params are their subtree's), in execution
    order; a module called several times (the shared ReLU of a block) has one row per call.
    """
    rows: list[list[str]] = []
    hooks = []

    def hook_for(path: str) -> Callable:
        def hook(module: nn.Module, _inputs: object, output: object) -> None:
            rows.append([path, type(module).__name__, _shape_str(output), f"{count_params(module):,}"])

        return hook

    for path, module in model.named_modules():
        if path and (not any(True for _ in module.children()) or _SUMMARY_CONTAINER.match(path)):
            hooks.append(module.register_forward_hook(hook_for(path)))

    was_training = model.training
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.randn(1, *input_size, device=device))
    except RuntimeError as err:
        raise CompetitionError(
            f"Input {'x'.join(map(str, input_size))} does not fit this model: {err}"
        ) from err
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    total, trainable = count_params(model), count_params(model, trainable_only=True)
    table = _format_table(["module", "type", "output shape", "params"], rows, right={3})
    return (
        f"{table}\n\n"
        f"Input: (1, {', '.join(map(str, input_size))})  Output: {_shape_str(output)}\n"
        f"Total params: {total:,}\nTrainable params: {trainable:,}"
    )


def _table_defaults(spec: _Spec) -> tuple[int, str]:
    if spec.source == "custom":
        _, classes, size = _CUSTOM[spec.arch]
        return classes, size
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.arch)
    if cfg is None:
        return 1000, "?"
    _, h, w = cfg.input_size
    return 1000, f"{h}x{w} (timm default)"


def _param_count_cheaply(name: str, num_classes: int) -> int:
    # The meta device skips allocation and init: counting ResNet-152 costs milliseconds.
    try:
        with torch.device("meta"):
            return count_params(create_model(name, num_classes))
    except CompetitionError:
        raise
    except Exception:
        return count_params(create_model(name, num_classes))


def models_table(names: Iterable[str]) -> str:
    """name / params / input size; params counted with 1000 classes, 10 for the CIFAR ResNets."""
    rows = []
    for name in names:
        spec = _resolve(name)
        classes, size = _table_defaults(spec)
        rows.append([name, f"{_param_count_cheaply(name, classes):,}", str(classes), size])
    headers = ["model", "params", "classes", "input size"]
    note = (
        "Params counted with 1000 classes (ImageNet heads), 10 for the CIFAR ResNets (custom/resnet20..110)."
    )
    return note + "\n\n" + _format_table(headers, rows, right={1, 2})


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3x224x224"`` -> (3, 224, 224)."""
    parts = text.strip().lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise CompetitionError(
            f"Malformed --input {text!r}: expected CxHxW with positive integers, e.g. 3x224x224 or 3x32x32."
        )
    c, h, w = (int(p) for p in parts)
    return c, h, w


def run_models_command(summary: str | None, input: str, names: list[str] | None) -> int:
    """``competition models``: the table of ``names`` (default: list_models()), or one model's summary."""
    input_size = parse_input_size(input)
    if summary:
        spec = _resolve(summary)
        classes, _ = _table_defaults(spec)
        model = create_model(summary, classes, in_chans=input_size[0])
        print(f"{summary} ({classes} classes), input {input}\n")
        print(layer_summary(model, input_size))
    else:
        print(models_table(names or list_models()))
    return 0
