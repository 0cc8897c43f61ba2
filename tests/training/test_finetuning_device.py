"""The device FinetuneArguments leaves to the trainer: the CPU is forced only where no accelerator is available, so an
Apple machine (MPS) or any other device accelerate would pick keeps it (it was forced to the CPU whenever CUDA was
absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llara_st.training.finetuning import parse_finetune_arguments


@pytest.mark.parametrize(("accelerator", "bf16"), [(False, False), (False, True), (True, False)])
def test_the_cpu_is_forced_only_without_an_accelerator(monkeypatch, tmp_path: Path, accelerator, bf16) -> None:
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: accelerator)
    (args,) = parse_finetune_arguments({"model_name_or_path": "m", "output_dir": str(tmp_path), "bf16": bf16})
    assert args.use_cpu is not accelerator
    assert args.bf16 is bf16  # without an accelerator bf16 autocast runs on the CPU
