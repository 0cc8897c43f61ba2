"""Config values reach their field's type when the config is parsed, before anything loads (issue 16 item 6,
issue 18 item 8): YAML 1.1 reads ``1e-4`` as a string, a quoted ``"false"`` is a truthy string, and a typo must be
named before a ``__post_init__`` check reports something else. Both workflows take one set of names (issue 19): the
LoRA block of :class:`LLaRATrainingArguments`, ``max_rows``; an old name is refused naming the new one."""

from __future__ import annotations

from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformerTrainingArguments

from llara_st.training import (
    AdaptationArguments,
    FinetuneArguments,
    LLaRATrainingArguments,
    parse_adaptation_arguments,
    parse_arguments,
    parse_finetune_arguments,
)

ADAPT = {"model_name_or_path": "m", "text_paths": ["docs.txt"], "output_dir": "out", "use_cpu": True}
FINETUNE = {"model_name_or_path": "m", "output_dir": "out"}


def test_yaml_exponent_is_a_float(tmp_path: Path) -> None:
    # Regression: PyYAML reads 1e-4 (no dot) as the string "1e-4"; the trainer failed on it after loading.
    path = tmp_path / "adapt.yaml"
    path.write_text("model_name_or_path: m\ntext_paths: [docs.txt]\noutput_dir: out\nlearning_rate: 1e-4\n")
    (training_args,) = parse_adaptation_arguments(path)
    assert training_args.learning_rate == 1e-4 and isinstance(training_args.learning_rate, float)


def test_quoted_false_is_false() -> None:
    # Regression: use_lora (now lora): "false" was a truthy string, so LoRA ran.
    (adaptation,) = parse_adaptation_arguments({**ADAPT, "lora": "false", "lm_weight": "0.5"})
    assert adaptation.lora is False and adaptation.lm_weight == 0.5
    (args,) = parse_finetune_arguments({**FINETUNE, "lora": "no", "lora_r": "8"})
    assert args.lora is False and args.lora_r == 8


@pytest.mark.parametrize(
    ("key", "value"),
    [("lora", "maybe"), ("lora_r", "eight"), ("lora_r", 2.5), ("lm_weight", True), ("text_paths", "docs.txt")],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        parse_adaptation_arguments({**ADAPT, key: value})


def test_null_for_a_field_that_cannot_be_none_is_refused() -> None:
    with pytest.raises(ValueError, match="lora_r"):
        parse_finetune_arguments({**FINETUNE, "lora_r": None})


def test_a_typo_is_named_before_post_init_checks() -> None:
    # Regression: text_path (for text_paths) was reported as "No training data".
    settings = {key: value for key, value in ADAPT.items() if key != "text_paths"}
    with pytest.raises(ValueError, match="text_path") as error:
        parse_adaptation_arguments({**settings, "text_path": ["docs.txt"]})
    assert "No training data" not in str(error.value)


def test_values_of_the_right_type_pass_unchanged() -> None:
    (adaptation,) = parse_adaptation_arguments(
        {**ADAPT, "max_rows": 10, "warmup_steps": 5, "report_to": "none", "lora_target_modules": ["q_proj"]}
    )
    assert adaptation.max_rows == 10 and adaptation.lora_target_modules == ["q_proj"]
    assert adaptation.warmup_steps == 5


def test_dataclass_without_trainer_fields() -> None:
    (args,) = parse_arguments([SentenceTransformerTrainingArguments], {"output_dir": "out", "seed": "3"})
    assert args.seed == 3


def test_both_workflows_share_one_lora_block_and_the_trainer_arguments() -> None:
    for workflow in (AdaptationArguments, FinetuneArguments):
        assert issubclass(workflow, LLaRATrainingArguments)
        assert issubclass(workflow, SentenceTransformerTrainingArguments)
    (adaptation,) = parse_adaptation_arguments({**ADAPT, "lora_save": "both", "train_prompt_tokens": False})
    (finetune,) = parse_finetune_arguments({**FINETUNE, "lora_save": "adapter", "max_rows": 7})
    assert (adaptation.lora, adaptation.lora_save, adaptation.train_prompt_tokens) == (False, "both", False)
    assert (finetune.lora, finetune.lora_save, finetune.max_rows) == (True, "adapter", 7)  # LoRA on by default here
    assert adaptation.lora_target_modules == finetune.lora_target_modules == ["all-linear"]
    with pytest.raises(ValueError, match="lora_save must be one of"):
        parse_finetune_arguments({**FINETUNE, "lora_save": "true"})


@pytest.mark.parametrize(
    ("parse", "settings", "key", "value"),
    [
        (parse_adaptation_arguments, ADAPT, "chunk_unit", "lines"),
        (parse_adaptation_arguments, ADAPT, "model_dtype", "float8"),
        (parse_adaptation_arguments, ADAPT, "attn_implementation", "flash_attention_2"),
        (parse_finetune_arguments, FINETUNE, "model_dtype", "float8"),
        (parse_finetune_arguments, FINETUNE, "positives", "some"),
    ],
)
def test_a_value_outside_its_choices_is_refused_naming_key_value_and_choices(parse, settings, key, value) -> None:
    """Issue 19: one check (check_choices) for the choice settings of both workflows."""
    with pytest.raises(ValueError, match=rf"{key} must be one of \(.*\), got '{value}'"):
        parse({**settings, key: value})


@pytest.mark.parametrize(
    ("parse", "settings", "old", "new"),
    [
        (parse_adaptation_arguments, ADAPT, "use_lora", "lora"),
        (parse_adaptation_arguments, ADAPT, "lora_train_prompt_tokens", "train_prompt_tokens"),
        (parse_finetune_arguments, FINETUNE, "merge_lora", "lora_save"),
        (parse_finetune_arguments, FINETUNE, "max_train_rows", "max_rows"),
    ],
)
def test_an_old_name_is_refused_naming_the_new_one(parse, settings, old: str, new: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"Unknown settings \\['{old}'\\].*renamed: {old} is now {new}"):
        parse({**settings, old: True})
    path = tmp_path / "config.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in {**settings, old: "true"}.items()))
    with pytest.raises(ValueError, match=f"{old} is now {new}"):
        parse(path)
    argv = [f"--{key}={value}" for key, value in settings.items() if not isinstance(value, list)]
    with pytest.raises(ValueError, match=f"{old} is now {new}"):
        parse([*argv, f"--{old}", "true"])
