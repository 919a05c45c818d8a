import os
from pathlib import Path

import pytest
import yaml

from competition.config import (
    CHOICES,
    SHORTCUTS,
    Config,
    config_to_dict,
    format_config,
    load_config,
    resolve_paths,
    save_config,
)
from competition.errors import CompetitionError


def write(tmp_path: Path, text: str, name: str = "exp1.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(path, overrides=()) -> str:
    with pytest.raises(CompetitionError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_defaults():
    cfg = Config()
    assert cfg.data.image_size == 128 and cfg.data.mean == [0.485, 0.456, 0.406]
    assert cfg.model.name == "custom/resnet18" and cfg.model.kwargs == {}
    assert cfg.optimizer.betas == [0.9, 0.999]
    assert cfg.trainer.fold is None and cfg.trainer.mixed_precision == "auto"
    assert cfg.tracking.tags == []
    # Mutable defaults are per instance.
    Config().tracking.tags.append("x")
    assert Config().tracking.tags == []


def test_load_without_file_resolves_defaults():
    cfg = load_config(None)
    assert cfg.data.data_dir == "inputs/dogs-vs-cats"
    assert cfg.data.folds_csv == "folds/dogs-vs-cats.csv"
    assert cfg.trainer.exp == "dogs-vs-cats"
    assert cfg.trainer.epochs == 10


def test_yaml_load(tmp_path):
    path = write(
        tmp_path,
        """
data:
  competition: plant-seedlings
  image_size: 224
  resize: random_resized_crop
model:
  name: resnet50
  kwargs: {stem: cifar}
optimizer:
  name: adamw
  lr: 1e-3        # YAML 1.1 would read this as a string
  weight_decay: 0 # int accepted for a float field
scheduler:
  milestones: [30, 60]
trainer:
  mixed_precision: no   # must stay the string "no", not False
  fold: all
  class_weights: balanced
tracking:
""",
    )
    cfg = load_config(path)
    assert cfg.data.competition == "plant-seedlings" and cfg.data.image_size == 224
    assert cfg.data.data_dir == "inputs/plant-seedlings"
    assert cfg.data.folds_csv == "folds/plant-seedlings.csv"
    assert cfg.trainer.exp == "exp1"  # the file stem
    assert cfg.model.kwargs == {"stem": "cifar"}
    assert cfg.optimizer.lr == pytest.approx(1e-3) and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.weight_decay == 0.0 and isinstance(cfg.optimizer.weight_decay, float)
    assert cfg.scheduler.milestones == [30.0, 60.0]
    assert cfg.trainer.mixed_precision == "no"
    assert cfg.trainer.fold == "all" and cfg.trainer.class_weights == "balanced"
    assert cfg.data.batch_size == 64  # untouched keys keep their defaults


def test_empty_yaml_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")) == load_config(None, ["trainer.exp=exp1"])


def test_explicit_paths_are_kept(tmp_path):
    path = write(tmp_path, "data: {data_dir: /data/x, folds_csv: f.csv}\ntrainer: {exp: mine}\n")
    cfg = load_config(path)
    assert (cfg.data.data_dir, cfg.data.folds_csv, cfg.trainer.exp) == ("/data/x", "f.csv", "mine")
    assert resolve_paths(cfg) == cfg


def test_resolve_paths_returns_a_copy():
    cfg = Config()
    resolved = resolve_paths(cfg, "configs/baseline.yaml")
    assert resolved.trainer.exp == "baseline" and resolved.data.data_dir == "inputs/dogs-vs-cats"
    assert cfg.data.data_dir is None and cfg.trainer.exp is None


def test_overrides(tmp_path):
    path = write(tmp_path, "model:\n  kwargs: {stem: imagenet, width: 2}\ntrainer:\n  epochs: 20\n")
    cfg = load_config(
        path,
        [
            "trainer.epochs=3",
            "model.kwargs.stem=cifar",
            "model.kwargs.block.groups=4",
            "optimizer.betas=[0.9,0.99]",
            "trainer.fold=all",
            "model.pretrained=null",
            "tracking.tags=[a, b]",
            "trainer.clip_grad_norm=1",
            "trainer.mixed_precision=no",
            "optimizer.lr=5e-4",
            "data.mean = [0.5, 0.5, 0.5]",
        ],
    )
    assert cfg.trainer.epochs == 3  # the command line beats the file
    assert cfg.model.kwargs == {"stem": "cifar", "width": 2, "block": {"groups": 4}}
    assert cfg.optimizer.betas == [0.9, 0.99]
    assert cfg.trainer.fold == "all"
    assert cfg.model.pretrained is None
    assert cfg.tracking.tags == ["a", "b"]
    assert cfg.trainer.clip_grad_norm == 1.0 and isinstance(cfg.trainer.clip_grad_norm, float)
    assert cfg.trainer.mixed_precision == "no"
    assert cfg.optimizer.lr == pytest.approx(5e-4)
    assert cfg.data.mean == [0.5, 0.5, 0.5]


def test_later_override_wins_and_values_may_contain_equals():
    cfg = load_config(None, ["trainer.fold=2", "fold=3", "model.kwargs.act=a=b", "model.kwargs={}"])
    assert cfg.trainer.fold == 3
    assert cfg.model.kwargs == {}
    assert load_config(None, ["model.kwargs.act=a=b"]).model.kwargs == {"act": "a=b"}


def test_override_text_for_string_fields():
    # Would parse as int / bool; the field wants a string, so the text is taken as typed.
    cfg = load_config(None, ["trainer.exp=2024", "tracking.project=yes"])
    assert cfg.trainer.exp == "2024" and cfg.tracking.project == "yes"


@pytest.mark.parametrize(
    ("override", "section", "key", "value"),
    [
        ("epochs=3", "trainer", "epochs", 3),
        ("fold=2", "trainer", "fold", 2),
        ("fold=all", "trainer", "fold", "all"),
        ("resume=true", "trainer", "resume", True),
        ("seed=7", "trainer", "seed", 7),
        ("lr=0.05", "optimizer", "lr", 0.05),
        ("batch_size=32", "data", "batch_size", 32),
        ("image_size=64", "data", "image_size", 64),
        ("model=resnet34", "model", "name", "resnet34"),
    ],
)
def test_shortcuts(override, section, key, value):
    assert SHORTCUTS[override.split("=")[0]] == f"{section}.{key}"
    assert getattr(getattr(load_config(None, [override]), section), key) == value


def test_every_shortcut_targets_a_real_key():
    cfg = config_to_dict(Config())
    for target in SHORTCUTS.values():
        section, key = target.split(".")
        assert key in cfg[section]


def test_unknown_section(tmp_path):
    path = write(tmp_path, "trainr:\n  epochs: 3\n")
    msg = error(path)
    assert str(path) in msg and "'trainr'" in msg and "did you mean 'trainer'" in msg
    assert "data, model, optimizer, scheduler, trainer, tracking" in msg
    msg = error(None, ["optimiser.lr=0.1"])
    assert "command line" in msg and "'optimiser'" in msg and "did you mean 'optimizer'" in msg


def test_unknown_key_with_suggestion(tmp_path):
    path = write(tmp_path, "trainer:\n  epoch: 3\n")
    msg = error(path)
    assert str(path) in msg
    assert "'trainer.epoch'" in msg and "did you mean 'epochs'" in msg
    assert "grad_accum_steps" in msg and "eval_every" in msg  # lists the section's valid keys
    msg = error(None, ["data.imagesize=64"])
    assert "command line" in msg and "did you mean 'image_size'" in msg and "batch_size" in msg
    msg = error(None, ["epoch=3"])
    assert "'epoch'" in msg and "did you mean 'epochs'" in msg and "image_size" in msg


def test_unknown_key_without_close_match():
    msg = error(None, ["trainer.zzzz=1"])
    assert "'trainer.zzzz'" in msg and "did you mean" not in msg


@pytest.mark.parametrize(
    ("override", "key", "expected", "given"),
    [
        ("trainer.epochs=3.5", "trainer.epochs", "expects int", "3.5"),  # float for int
        ("trainer.epochs=true", "trainer.epochs", "expects int", "True"),  # bool is not an int here
        ("optimizer.lr=fast", "optimizer.lr", "expects float", "'fast'"),  # str for float
        ("data.competition=[a]", "data.competition", "expects str", "['a']"),  # list for str
        ("data.competition=null", "data.competition", "expects str", "None"),  # None for non-Optional
        ("trainer.epochs=null", "trainer.epochs", "expects int", "None"),
        ("optimizer.betas=0.9", "optimizer.betas", "expects list[float]", "0.9"),
        ("data.mean=[0.5, x, 0.5]", "data.mean", "expects list[float]", "'x'"),
        ("tracking.tags=fast", "tracking.tags", "expects list[str]", "'fast'"),  # str for list
        ("data.hflip=maybe", "data.hflip", "expects bool", "'maybe'"),
        ("model.kwargs=[1]", "model.kwargs", "expects mapping", "[1]"),
        ("trainer.fold=1.5", "trainer.fold", "expects str or int or null", "1.5"),
        ("trainer.class_weights=[1, a]", "trainer.class_weights", "list[float] or str or null", "'a'"),
    ],
)
def test_wrong_type_on_command_line(override, key, expected, given):
    msg = error(None, [override])
    assert "command line" in msg and f"'{key}'" in msg and expected in msg and given in msg


def test_wrong_type_in_yaml(tmp_path):
    path = write(tmp_path, "data:\n  image_size: 128.0\n")
    msg = error(path)
    assert str(path) in msg and "'data.image_size'" in msg and "expects int" in msg and "128.0" in msg


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_bad_enum(name):
    msg = error(None, [f"{name}=bogus"])
    assert f"'{name}'" in msg and "'bogus'" in msg
    assert ", ".join(CHOICES[name]) in msg


def test_enum_values_accepted():
    for name, choices in CHOICES.items():
        section, key = name.split(".")
        for choice in choices:
            assert getattr(getattr(load_config(None, [f"{name}={choice}"]), section), key) == choice


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    msg = error(path)
    assert "not found" in msg and str(path) in msg


def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "trainer:\n  epochs: 3\n  seed: : 4\n")
    msg = error(path)
    assert str(path) in msg and "line 3" in msg and "invalid YAML" in msg


@pytest.mark.parametrize(
    "text", ["- trainer\n- data\n", "trainer: 5\n"], ids=["top-level list", "section scalar"]
)
def test_yaml_wrong_shape(tmp_path, text):
    path = write(tmp_path, text)
    msg = error(path)
    assert str(path) in msg and "mapping" in msg


@pytest.mark.parametrize("override", ["trainer.epochs", "epochs 3", "=3"])
def test_override_without_equals(override):
    msg = error(None, [override])
    assert "command line" in msg and repr(override) in msg and "section.key=value" in msg


def test_bad_override_shapes():
    assert "names no key" in error(None, ["trainer.=3"])
    assert "not a mapping" in error(None, ["trainer.epochs.x=1"])
    assert "cannot parse" in error(None, ["optimizer.betas=[0.9,"])


def test_round_trip(tmp_path):
    path = write(tmp_path, "data:\n  competition: plant-seedlings\nscheduler:\n  name: multistep\n")
    cfg = load_config(
        path,
        [
            "model.kwargs.stem=cifar",
            "trainer.mixed_precision=no",
            "trainer.exp=1e-3",  # a string that looks like a float must come back a string
            "trainer.fold=2",
            "trainer.class_weights=[1, 2.5]",
            "tracking.tags=[yes, 'null', '3']",
            "optimizer.weight_decay=1e-10",
            "trainer.folds=[0, 1]",
        ],
    )
    saved = tmp_path / "run" / "config.yaml"
    save_config(cfg, saved)
    assert load_config(saved) == cfg

    text = saved.read_text()
    assert "!!" not in text  # plain YAML: no python/object tags
    assert yaml.safe_load(text) == config_to_dict(cfg)
    assert list(yaml.safe_load(text)) == ["data", "model", "optimizer", "scheduler", "trainer", "tracking"]
    assert os.listdir(saved.parent) == ["config.yaml"]  # the temporary file was renamed away


def test_save_overwrites_and_accepts_tuples(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(load_config(None), path)
    cfg = load_config(None, ["epochs=5"])
    cfg.optimizer.betas = (0.8, 0.9)  # built in code: a tuple must still write plain YAML
    save_config(cfg, path)
    loaded = load_config(path)
    assert loaded.trainer.epochs == 5 and loaded.optimizer.betas == [0.8, 0.9]


def test_config_to_dict_is_independent():
    cfg = Config()
    d = config_to_dict(cfg)
    d["data"]["mean"].append(1.0)
    assert cfg.data.mean == [0.485, 0.456, 0.406]


def test_format_config():
    text = format_config(load_config(None, ["epochs=3", "model.kwargs.stem=cifar"]))
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "data",
        "model",
        "optimizer",
        "scheduler",
        "trainer",
        "tracking",
    ]
    assert "epochs=3" in text and "stem" in text and "name=custom/resnet18" in text


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("configs/*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_configs_load_and_build_their_model(path: Path):
    from competition.models import create_model

    cfg = load_config(path)
    assert cfg.data.competition == path.parent.name  # configs/<competition>/<exp>.yaml
    model = create_model(cfg.model.name, {"cifar-10": 10, "dogs-vs-cats": 2}[cfg.data.competition], **cfg.model.kwargs)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_dogs_leaderboard_starts_from_the_weights_its_pretraining_config_writes():
    """`make leaderboard-dogs-vs-cats` trains configs/cifar-10/pretrain-resnet9.yaml first; the dogs recipe
    must point at that run's checkpoint and build the same network, or the pretraining is wasted."""
    from competition.train import fold_name, run_dir

    root = Path(__file__).parents[1]
    pre = load_config(root / "configs/cifar-10/pretrain-resnet9.yaml")
    dogs = load_config(root / "configs/dogs-vs-cats/leaderboard.yaml")
    assert pre.trainer.fold == "all"  # every CIFAR-10 image, nothing held out
    assert Path(dogs.model.pretrained) == run_dir(pre) / fold_name(pre.trainer.fold) / "best.safetensors"
    assert (dogs.model.name, dogs.model.kwargs) == (pre.model.name, pre.model.kwargs)
    assert (dogs.data.mean, dogs.data.std) == (pre.data.mean, pre.data.std)  # inputs scaled as in pretraining
    makefile = (root / "Makefile").read_text()
    assert f"PRETRAINED := {dogs.model.pretrained}" in makefile and "EXP=pretrain-resnet9" in makefile
