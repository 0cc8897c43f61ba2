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
