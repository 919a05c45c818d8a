"""Models: hand-written ResNets vs torchvision, checkpoint loading, timm, and the models command."""

from __future__ import annotations

import logging
import os
import time

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from competition.errors import CompetitionError
from competition.models import (
    BasicBlock,
    Bottleneck,
    clean_state_dict,
    count_params,
    create_model,
    layer_summary,
    list_models,
    load_state_dict_file,
    models_table,
    parse_input_size,
    run_models_command,
    timm_resnet_family,
)

RESNET20_PARAMS = 272_474  # option-B shortcuts; the paper's option A would give 269,722


def randomized_torchvision(depth: int) -> nn.Module:
    """A torchvision ResNet whose weights *and* BN running stats are random, so eval-mode
    equivalence exercises every buffer (default stats 0/1 would hide a mis-mapped buffer)."""
    torch.manual_seed(depth)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    return model.eval()


@pytest.fixture(scope="module")
def tv18() -> nn.Module:
    return randomized_torchvision(18)


@pytest.fixture
def tv18_path(tv18, tmp_path):
    path = tmp_path / "resnet18_tv.pth"
    torch.save(tv18.state_dict(), path)
    return path


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# --- architecture -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
    ],
)
def test_param_counts_equal_torchvision(arch, expected):
    with torch.device("meta"):  # counting needs shapes only, not 60M initialised weights
        model = create_model(f"custom/{arch}", 1000)
    assert count_params(model) == expected


def test_resnet20_param_count_and_depth():
    model = create_model("custom/resnet20", 10)
    assert count_params(model) == RESNET20_PARAMS
    assert 260_000 <= count_params(model) <= 280_000
    # 6n+2 weighted layers on the main path (projection shortcuts aside): stem + 18 convs + fc.
    main_path = [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and "downsample" not in name
    ]
    assert len(main_path) == 20
    assert [s[0].conv1.out_channels for s in model.stages()] == [16, 32, 64]


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_torchvision_checkpoint_reproduces_logits(depth, tmp_path):
    tv = randomized_torchvision(depth)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(tv.state_dict(), path)
    ours = create_model(f"custom/resnet{depth}", 1000, pretrained=path)
    x = torch.randn(2, 3, 64, 64)
    expected, got = logits(tv, x), logits(ours, x)
    assert got.shape == (2, 1000)
    assert (got - expected).abs().max().item() < 1e-4
    assert torch.equal(ours.layer1[0].bn1.running_var, tv.layer1[0].bn1.running_var)


def test_state_dict_keys_match_torchvision_strictly():
    for depth in (18, 50):
        tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        ours = create_model(f"custom/resnet{depth}", 1000)
        assert list(ours.state_dict()) == list(tv.state_dict())
        ours.load_state_dict(tv.state_dict(), strict=True)


def test_output_shapes_cifar_and_imagenet():
    x32 = torch.randn(2, 3, 32, 32)
    assert logits(create_model("custom/resnet18", 10, stem="cifar"), x32).shape == (2, 10)
    assert logits(create_model("custom/resnet20", 10), x32).shape == (2, 10)
    assert logits(create_model("custom/resnet18", 1000), torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_cifar_stem_keeps_resolution_and_key_layout():
    model = create_model("custom/resnet18", 10, stem="cifar")
    assert isinstance(model.maxpool, nn.Identity)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    stages = create_model("custom/resnet18", 10, stem="cifar", features_only=True)(torch.randn(2, 3, 32, 32))
    assert stages[0].shape == (2, 64, 32, 32)
    # Same parameter names as the ImageNet variant, so checkpoints move between them.
    assert set(model.state_dict()) == set(create_model("custom/resnet18", 10).state_dict())


def test_features_only_returns_stage_outputs():
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        r50 = create_model("custom/resnet50", 1000, features_only=True).eval()(x)
        r20 = create_model("custom/resnet20", 10, features_only=True).eval()(torch.randn(2, 3, 32, 32))
    assert [tuple(t.shape) for t in r50] == [
        (2, 256, 16, 16),
        (2, 512, 8, 8),
        (2, 1024, 4, 4),
        (2, 2048, 2, 2),
    ]
    assert [tuple(t.shape) for t in r20] == [(2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]


def test_include_top_false_returns_pooled_features():
    model = create_model("custom/resnet50", 1000, include_top=False)
    assert model.num_features == 2048
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert logits(model, torch.randn(2, 3, 64, 64)).shape == (2, 2048)
    r20 = create_model("custom/resnet20", 10, include_top=False)
    assert logits(r20, torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_forward_features_then_head_equals_forward():
    model = create_model("custom/resnet18", 7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        fmap = model.forward_features(x)
        assert fmap.shape == (2, 512, 2, 2)
        assert torch.equal(model.forward_head(fmap), model(x))
        assert model.forward_head(fmap, pre_logits=True).shape == (2, 512)


@pytest.mark.parametrize(
    "arch, block, last_bn", [("resnet18", BasicBlock, "bn2"), ("resnet50", Bottleneck, "bn3")]
)
def test_zero_init_residual(arch, block, last_bn):
    blocks = [
        m
        for m in create_model(f"custom/{arch}", 10, zero_init_residual=True).modules()
        if isinstance(m, block)
    ]
    assert blocks and all(torch.count_nonzero(getattr(b, last_bn).weight) == 0 for b in blocks)
    # Only the residual branch's last BN: the others and the shortcut BNs stay at 1.
    assert all(torch.all(b.bn1.weight == 1) for b in blocks)
    default = [m for m in create_model(f"custom/{arch}", 10).modules() if isinstance(m, block)]
    assert all(torch.all(getattr(b, last_bn).weight == 1) for b in default)


def test_init_is_kaiming_fan_out():
    model = create_model("custom/resnet50", 10)
    # 512 -> 2048 1x1: fan_out (2048) and fan_in (512) differ, so the mode is observable.
    w = model.layer4[0].conv3.weight
    assert abs(w.std().item() - (2 / 2048) ** 0.5) < 0.002


def test_channels_last_and_compile_are_opt_in():
    assert create_model("custom/resnet18", 10, channels_last=True).conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert not hasattr(create_model("custom/resnet18", 10), "_orig_mod")
    compiled = create_model("custom/resnet18", 10, compile=True)  # lazy: nothing compiles until called
    assert isinstance(compiled._orig_mod, nn.Module)


# --- checkpoints ------------------------------------------------------------------------------


def test_different_num_classes_reinitialises_classifier(tv18, tv18_path, caplog):
    with caplog.at_level(logging.WARNING, logger="competition.models.factory"):
        model = create_model("custom/resnet18", 5, pretrained=tv18_path)
    assert model.fc.weight.shape == (5, 512)
    assert torch.equal(model.conv1.weight, tv18.conv1.weight)
    assert torch.equal(model.layer4[1].bn2.running_mean, tv18.layer4[1].bn2.running_mean)
    assert "re-initialised" in caplog.text and "1000" in caplog.text and "5 classes" in caplog.text


def test_headless_model_skips_checkpoint_classifier(tv18, tv18_path):
    model = create_model("custom/resnet18", 1000, pretrained=tv18_path, include_top=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.flatten(tv18.avgpool(nn.Sequential(*list(tv18.children())[:-2])(x)), 1)
    assert (logits(model, x) - expected).abs().max() < 1e-4


def test_in_chans_1_adapts_first_conv(tv18, tv18_path):
    model = create_model("custom/resnet18", 1000, pretrained=tv18_path, in_chans=1)
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(model.conv1.weight, tv18.conv1.weight.sum(dim=1, keepdim=True))
    # A grey image replicated to RGB must give the RGB model's logits.
    grey = torch.randn(2, 1, 64, 64)
    assert (logits(model, grey) - logits(tv18, grey.expand(-1, 3, -1, -1))).abs().max() < 1e-4


def test_wrong_architecture_checkpoint_raises(tv18_path):
    with pytest.raises(CompetitionError) as err:
        create_model("custom/resnet34", 1000, pretrained=tv18_path)
    msg = str(err.value)
    assert "custom/resnet34" in msg and str(tv18_path) in msg and "layer1.2." in msg


def test_shape_mismatch_checkpoint_raises(tmp_path, caplog):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(CompetitionError, match=r"timm/resnet18.*shape mismatch.*layer1\.0\.conv1\.weight"):
        create_model("timm/resnet18", 1000, pretrained=path)
    # fc differs in width (2048 vs 512), not class count: part of the error, not a re-init notice.
    assert "re-initialised" not in caplog.text


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CompetitionError, match="nope.pth"):
        create_model("custom/resnet18", 10, pretrained=missing)


def test_unreadable_or_foreign_files_raise(tmp_path):
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(CompetitionError, match=r"\.safetensors"):
        load_state_dict_file(tmp_path / "w.ckpt")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(CompetitionError, match="junk.pth"):
        load_state_dict_file(tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(CompetitionError, match="does not contain a state dict"):
        load_state_dict_file(tmp_path / "meta.pt")


def test_wrapper_prefixes_are_stripped(tv18, tmp_path):
    wrapped = {f"module._orig_mod.{k}": v for k, v in tv18.state_dict().items()}
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": wrapped, "epoch": 9}, path)
    model = create_model("custom/resnet18", 1000, pretrained=path)
    x = torch.randn(2, 3, 64, 64)
    assert (logits(model, x) - logits(tv18, x)).abs().max() < 1e-4
    assert clean_state_dict({"_orig_mod.fc.bias": 1, "module.conv1.weight": 2, "fc.module.x": 3}) == {
        "fc.bias": 1,
        "conv1.weight": 2,
        "fc.module.x": 3,  # only leading wrappers are prefixes
    }


def test_compiled_model_state_dict_round_trips(tmp_path):
    compiled = create_model("custom/resnet20", 10, compile=True)
    state = compiled.state_dict()
    assert next(iter(state)).startswith("_orig_mod.")
    torch.save({"model": state}, tmp_path / "compiled.bin")
    model = create_model("custom/resnet20", 10, pretrained=tmp_path / "compiled.bin")
    assert torch.equal(model.fc.weight, compiled._orig_mod.fc.weight)


def test_safetensors_checkpoint(tv18, tmp_path):
    path = tmp_path / "r18.safetensors"
    save_file(tv18.state_dict(), str(path))
    model = create_model("custom/resnet18", 1000, pretrained=path)
    x = torch.randn(2, 3, 64, 64)
    assert (logits(model, x) - logits(tv18, x)).abs().max() < 1e-4


# --- timm -------------------------------------------------------------------------------------


def test_timm_resnet18_creates_and_runs():
    model = create_model("timm/resnet18", 10)
    assert type(model).__module__.startswith("timm.")
    assert logits(model, torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_torchvision_checkpoint_loads_into_timm_resnet18(tv18, tv18_path):
    model = create_model("timm/resnet18", 1000, pretrained=tv18_path)
    x = torch.randn(2, 3, 64, 64)
    assert (logits(model, x) - logits(tv18, x)).abs().max() < 1e-4


def test_timm_pretrained_true_without_cache_raises_fast(tmp_path, monkeypatch):
    import huggingface_hub.constants

    # huggingface_hub reads its cache location at import: redirect the live constants too.
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_hub_cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline_before = huggingface_hub.constants.HF_HUB_OFFLINE
    start = time.monotonic()
    with pytest.raises(CompetitionError) as err:
        create_model("timm/resnet18", 10, pretrained=True)
    assert time.monotonic() - start < 30
    assert "pretrained=/path/to/weights.pth" in str(err.value) and "timm/resnet18" in str(err.value)
    # Offline mode is scoped to the call.
    assert "HF_HUB_OFFLINE" not in os.environ
    assert huggingface_hub.constants.HF_HUB_OFFLINE == offline_before


def test_custom_pretrained_true_asks_for_a_path():
    with pytest.raises(CompetitionError, match="pretrained=/path/to/weights.pth"):
        create_model("custom/resnet50", 10, pretrained=True)


# --- names ------------------------------------------------------------------------------------


def test_unknown_names_list_valid_ones():
    with pytest.raises(CompetitionError) as err:
        create_model("custom/resnet51", 10)
    msg = str(err.value)
    assert "custom/resnet18" in msg and "custom/resnet110" in msg and "timm/<arch>" in msg
    assert "Did you mean" in msg and "custom/resnet50" in msg
    with pytest.raises(CompetitionError, match="ResNet family"):
        create_model("timm/vit_base_patch16_224", 10)
    with pytest.raises(CompetitionError, match="prefix is required: custom/resnet18 or timm/resnet18"):
        create_model("resnet18", 10)


def test_unknown_option_raises():
    with pytest.raises(CompetitionError, match="strem"):
        create_model("custom/resnet18", 10, strem="cifar")
    with pytest.raises(CompetitionError, match="stem"):
        create_model("custom/resnet18", 10, stem="tiny")


def test_list_models_names_are_all_creatable():
    names = list_models()
    family = timm_resnet_family()
    assert "custom/resnet20" in names and "timm/seresnext26d_32x4d" in names
    assert {"resnet18", "resnet26d", "resnet50d", "resnext50_32x4d", "resnetv2_50"} <= set(family)
    assert all(n.removeprefix("timm/") in family for n in names if n.startswith("timm/"))


# --- inspection -------------------------------------------------------------------------------


def test_layer_summary_resnet50():
    model = create_model("custom/resnet50", 1000)
    text = layer_summary(model, (3, 224, 224))
    layer4 = [line for line in text.splitlines() if line.startswith("layer4 ")]
    assert len(layer4) == 1 and "(1, 2048, 7, 7)" in layer4[0] and "14,964,736" in layer4[0]
    assert "layer4.2.conv3" in text and "Bottleneck" in text
    assert "Total params: 25,557,032" in text
    assert model.training  # restored after the eval-mode pass


def test_models_table_and_command(capsys):
    table = models_table(["custom/resnet20", "custom/resnet50", "timm/resnet18"])
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith(("custom/", "timm/"))}
    assert "272,474" in rows["custom/resnet20"] and "32x32 (CIFAR)" in rows["custom/resnet20"]
    assert "25,557,032" in rows["custom/resnet50"] and "224x224" in rows["custom/resnet50"]
    assert "11,689,512" in rows["timm/resnet18"]
    assert "1000 classes" in table  # the header says what the counts assume

    assert run_models_command(None, "3x224x224", ["custom/resnet18", "timm/resnet26d"]) == 0
    out = capsys.readouterr().out
    assert "custom/resnet18" in out and "timm/resnet26d" in out and "11,689,512" in out

    assert run_models_command("custom/resnet20", "1x32x32", None) == 0
    out = capsys.readouterr().out
    assert "layer3" in out and "(1, 64, 8, 8)" in out and "(1, 10)" in out


@pytest.mark.parametrize("bad", ["224x224", "3x224", "3xAx224", "0x32x32", ""])
def test_malformed_input_size_raises(bad):
    with pytest.raises(CompetitionError, match="CxHxW"):
        run_models_command("custom/resnet18", bad, None)


def test_parse_input_size():
    assert parse_input_size(" 3X32x32 ") == (3, 32, 32)


# Page's ResNet-9 (width 64, 10 classes), counted by hand from its layer list.
RESNET9_PARAMS = (
    (3 * 64 + 64 * 128 + 2 * 128 * 128 + 128 * 256 + 256 * 512 + 2 * 512 * 512) * 9  # conv weights
    + 2 * (64 + 128 + 2 * 128 + 256 + 512 + 2 * 512)  # BN weight and bias
    + 512 * 10 + 10  # classifier
)


def test_resnet9_is_pages_design():
    model = create_model("custom/resnet9", 10)
    assert count_params(model) == RESNET9_PARAMS == 6_573_130
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_features(x).shape == (2, 512, 4, 4)  # three 2× max-pools from 32×32
    assert model(x).shape == (2, 10)


def test_resnet9_width_and_stem_stride_for_larger_photos():
    model = create_model("custom/resnet9", 2, width=16, stem_stride=2)
    assert model.forward_features(torch.randn(1, 3, 96, 96)).shape == (1, 128, 6, 6)
    with pytest.raises(CompetitionError, match="stem"):  # the ResNet options do not apply to it
        create_model("custom/resnet9", 2, stem="cifar")
