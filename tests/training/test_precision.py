import pytest
import torch

from llara_st.training.precision import bf16_is_fast, resolve_bf16


def test_auto_follows_the_cpu_probe(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert bf16_is_fast() is False
    assert resolve_bf16("auto") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert bf16_is_fast() is True
    assert resolve_bf16("auto") is True


@pytest.mark.parametrize(("setting", "expected"), [(True, True), (False, False), ("true", True), ("False", False)])
def test_explicit_settings_are_kept(setting, expected):
    assert resolve_bf16(setting) is expected


def test_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="'sometimes'"):
        resolve_bf16("sometimes")


@pytest.mark.parametrize(
    ("accelerator", "cuda", "bf16_supported", "expected"),
    [
        (False, False, False, {"bf16": True, "fp16": False}),  # the CPU: bf16 autocast only
        (True, False, False, {"bf16": False, "fp16": False}),  # e.g. MPS before macOS 14: neither
        (True, False, True, {"bf16": True, "fp16": False}),  # e.g. MPS on macOS 14+: bf16 on the device
        (True, True, False, {"bf16": False, "fp16": True}),  # a CUDA device without bf16
        (True, True, True, {"bf16": True, "fp16": True}),
    ],
)
def test_mixed_precision_follows_the_device(monkeypatch, accelerator, cuda, bf16_supported, expected):
    from llara_st.training import precision

    monkeypatch.setattr(torch.accelerator, "is_available", lambda: accelerator)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(precision, "is_torch_bf16_gpu_available", lambda: bf16_supported)
    assert {name: precision.autocast_available(name) for name in ("bf16", "fp16")} == expected
