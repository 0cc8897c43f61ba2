"""The device both workflows' arguments leave to the trainer (LLaRATrainingArguments): the CPU is forced only where no
accelerator is available, so an Apple machine (MPS) or any other device accelerate would pick keeps it (it was forced
to the CPU whenever CUDA was absent); adaptation decides it as fine-tuning does (the pipeline used to set it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llara_st.training import parse_adaptation_arguments, parse_finetune_arguments

ADAPT = {"model_name_or_path": "m", "text_paths": ["docs.txt"]}


@pytest.mark.parametrize("parse", [parse_adaptation_arguments, parse_finetune_arguments])
@pytest.mark.parametrize(("accelerator", "bf16"), [(False, False), (False, True), (True, False)])
def test_the_cpu_is_forced_only_without_an_accelerator(monkeypatch, tmp_path: Path, parse, accelerator, bf16) -> None:
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: accelerator)
    settings = {**ADAPT} if parse is parse_adaptation_arguments else {"model_name_or_path": "m"}
    (args,) = parse({**settings, "output_dir": str(tmp_path), "bf16": bf16})
    assert args.use_cpu is not accelerator
    assert args.bf16 is bf16  # without an accelerator bf16 autocast runs on the CPU
    assert args.ddp_find_unused_parameters is False
