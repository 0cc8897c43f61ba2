"""LoRA on a LLaRA model: only the adapter and the 16 prompt rows train, in float32; peft's ``all-linear`` adapts
exactly the seven Llama projections the hand-written list named; wrong targets and a merge without an adapter are
refused; ``lora_save`` writes the folders it names. (Merged vs unmerged embeddings: tests/recipes/test_finetune.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import llara_st
from llara_st.training.lora import add_lora_adapter, merge_lora_adapter, save_lora_model

# The targets llara_st listed by hand before it used peft's "all-linear": every projection of a Llama block.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_lora_trains_only_the_adapter_and_prompt_rows_in_float32(reference_llara_dir: Path) -> None:
    model = llara_st.load(reference_llara_dir, device="cpu", model_kwargs={"dtype": "float16"})
    add_lora_adapter(model, r=4, alpha=8)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())  # fp16 autocast needs it
    assert all("lora_" in name or "trainable_tokens_delta" in name for name in trainable)
    (delta,) = [p for name, p in trainable.items() if "trainable_tokens_delta" in name]
    assert delta.shape == (16, 64)  # the 16 <sK> rows only
    assert {name.split(".")[-4] for name in trainable if "lora_A" in name} == set(LLAMA_PROJECTIONS)

    with pytest.raises(ValueError, match=r"\['qkv_proj'\] are no layers"):  # peft alone would adapt q_proj only
        add_lora_adapter(llara_st.load(reference_llara_dir, device="cpu"), target_modules=["q_proj", "qkv_proj"])
    with pytest.raises(ValueError, match="no adapter"):
        merge_lora_adapter(llara_st.load(reference_llara_dir, device="cpu"))


def test_without_train_prompt_tokens_the_embeddings_stay_frozen(training_llara) -> None:
    # LoRA on linear layers never reaches the <sK> rows: only train_prompt_tokens makes them trainable.
    add_lora_adapter(training_llara, r=4, train_prompt_tokens=False)
    trainable = [name for name, parameter in training_llara.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_all_linear_adapts_the_modules_of_the_hand_list_with_the_same_weights(training_llara_dir: Path, tied) -> None:
    """peft's ``all-linear`` (the default) against the hand-written list it replaced, on a tiny Llama with an untied
    and a tied output head (SmolLM2 ties it): the same layers, and the same initial adapter for one seed."""
    adapters = {}
    for targets in (list(LLAMA_PROJECTIONS), "all-linear", ["all-linear"]):
        model = llara_st.load(training_llara_dir, device="cpu")
        causal_lm = model[0].causal_lm
        if tied:
            causal_lm.lm_head.weight = causal_lm.get_input_embeddings().weight
        torch.manual_seed(0)
        config = add_lora_adapter(model, r=4, target_modules=targets)
        adapted = {name for name, module in causal_lm.named_modules() if hasattr(module, "lora_A")}
        if targets != list(LLAMA_PROJECTIONS):  # all-linear: the config names exactly the adapted layers
            assert adapted == set(config.target_modules)
        assert "lm_head" not in {name.rsplit(".", 1)[-1] for name in adapted}
        trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        adapters[str(targets)] = (adapted, trainable)
    (hand_modules, hand_weights), *others = adapters.values()
    assert {name.rsplit(".", 1)[-1] for name in hand_modules} == set(LLAMA_PROJECTIONS)
    assert len(hand_modules) == len(LLAMA_PROJECTIONS) * causal_lm.config.num_hidden_layers
    for modules, weights in others:
        assert modules == hand_modules
        assert weights.keys() == hand_weights.keys()
        assert all(torch.equal(weights[name], hand_weights[name]) for name in weights)


@pytest.mark.parametrize(
    ("lora_save", "folders"),
    [
        ("merged", {"final": "merged"}),
        ("adapter", {"final": "adapter"}),
        ("both", {"final": "merged", "final-adapter": "adapter"}),
    ],
)
def test_lora_save_writes_the_folders_it_names(training_llara_dir: Path, tmp_path: Path, lora_save, folders) -> None:
    model = llara_st.load(training_llara_dir, device="cpu")
    add_lora_adapter(model, r=4)
    final = tmp_path / "final"
    assert save_lora_model(model, final, lora_save) == final
    written = {
        path.name: "adapter" if (path / "adapter_config.json").is_file() else "merged" for path in tmp_path.iterdir()
    }
    assert written == folders


@pytest.mark.parametrize("lora", [False, True])
def test_a_causal_lm_is_converted_to_disk_only_for_an_adapter(tiny_llama_dir: Path, tmp_path: Path, lora: bool) -> None:
    """Both workflows load through one function; fine-tuning used to convert into output_dir/base on every process."""
    from llara_st.training import parse_finetune_arguments
    from llara_st.training.lora import load_model_to_train

    (args,) = parse_finetune_arguments(
        {"model_name_or_path": str(tiny_llama_dir), "output_dir": str(tmp_path), "lora": lora}
    )
    model, base = load_model_to_train(args)
    assert model.tokenizer.convert_tokens_to_ids("<s16>") != model.tokenizer.unk_token_id
    written = [path.name for path in tmp_path.glob("base-llara-*")]
    assert (base is not None, len(written)) == ((True, 1) if lora else (False, 0))
    assert not (tmp_path / "base").exists()
