"""Conversion, saving and the two loaders (METHOD.md §1; issue: foundation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer

import llara_st
from llara_st.cli import main as cli_main
from llara_st.prompts import PROMPT_TOKENS


def test_convert_adds_missing_prompt_tokens(tiny_llama_dir, tmp_path):
    before = AutoTokenizer.from_pretrained(tiny_llama_dir)
    out = tmp_path / "llara"
    model = llara_st.convert(str(tiny_llama_dir), out)
    tokenizer = model[0].tokenizer
    assert len(tokenizer) == len(before) + 16
    ids = [tokenizer.convert_tokens_to_ids(token) for token in PROMPT_TOKENS]
    assert ids == list(range(len(before), len(before) + 16))
    assert all(token in tokenizer.all_special_tokens for token in PROMPT_TOKENS)
    assert model[0].model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model[0].model.get_output_embeddings().weight.shape[0] == len(tokenizer)
    # A prompt token is one token, never split into characters.
    assert tokenizer.tokenize("<s12>") == ["<s12>"]


def test_adding_prompt_tokens_is_deterministic_and_leaves_the_global_rng_alone(tiny_llama_dir):
    def prompt_rows():
        module = llara_st.build_llara_model(str(tiny_llama_dir), device="cpu")[0]
        ids = list(module.prompt_token_ids.values())
        model = module.model
        return model.get_input_embeddings().weight[ids].clone(), model.get_output_embeddings().weight[ids].clone()

    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = prompt_rows()
    assert torch.equal(torch.get_rng_state(), state)
    second = prompt_rows()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_convert_keeps_existing_prompt_token_ids(fixture_dir, reference_llara_dir):
    tokenizer = AutoTokenizer.from_pretrained(reference_llara_dir)
    original = AutoTokenizer.from_pretrained(fixture_dir / "model")
    assert len(tokenizer) == len(original)
    for token in PROMPT_TOKENS:
        assert tokenizer.convert_tokens_to_ids(token) == original.convert_tokens_to_ids(token)


def test_saved_folder_is_sentence_transformers_with_safetensors_only(reference_llara_dir):
    files = {p.name for p in reference_llara_dir.rglob("*") if p.is_file()}
    assert "modules.json" in files and "model.safetensors" in files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pkl", ".py"))]
    modules = json.loads((reference_llara_dir / "modules.json").read_text())
    assert [m["type"] for m in modules] == [
        "llara_st.modules.llara_transformer.LLaRATransformer",
        "llara_st.modules.last_k_pooling.LastKPooling",
        "sentence_transformers.base.modules.normalize.Normalize",
    ]
    assert load_file(reference_llara_dir / "model.safetensors")


def test_round_trip_through_both_loaders(reference_llara, reference_texts, tmp_path):
    queries, passages = reference_texts["queries"], reference_texts["passages"]
    expected_q = reference_llara.encode_query(queries)
    expected_p = reference_llara.encode_document(passages)
    reference_llara.save(str(tmp_path / "saved"))
    for loaded in (
        SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True, device="cpu"),
        llara_st.load(tmp_path / "saved", device="cpu"),
    ):
        assert isinstance(loaded[0], llara_st.LLaRATransformer)
        assert np.array_equal(loaded.encode_query(queries), expected_q)
        assert np.array_equal(loaded.encode_document(passages), expected_p)
        assert loaded.similarity_fn_name == "cosine"
        assert loaded[0].query_max_length == 64 and loaded[0].passage_max_length == 160


def test_custom_lengths_survive_save_and_load(reference_llara_dir, tmp_path):
    model = llara_st.build_llara_model(str(reference_llara_dir), query_max_length=40, passage_max_length=96)
    model.save(str(tmp_path / "m"))
    loaded = llara_st.load(tmp_path / "m")
    assert (loaded[0].query_max_length, loaded[0].passage_max_length) == (40, 96)
    assert loaded.preprocess(["word " * 500], task="document")["input_ids"].shape[1] == 96


def test_sentence_transformer_without_trust_remote_code_says_what_to_do(reference_llara_dir):
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        SentenceTransformer(str(reference_llara_dir))


def test_loading_an_unconverted_model_says_to_convert(tiny_llama_dir):
    with pytest.raises(ValueError, match="llara-st convert"):
        llara_st.LLaRATransformer(str(tiny_llama_dir))


def _copy_folder(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_safe_loader_refuses_python_files(reference_llara_dir, tmp_path):
    folder = _copy_folder(reference_llara_dir, tmp_path / "m")
    (folder / "modeling_evil.py").write_text("import os\n")
    with pytest.raises(llara_st.UnsafeModelError, match="Python files"):
        llara_st.load(folder)


def test_safe_loader_refuses_pickle_weights(reference_llara_dir, tmp_path):
    folder = _copy_folder(reference_llara_dir, tmp_path / "m")
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(llara_st.UnsafeModelError, match="pickle"):
        llara_st.load(folder)


def test_safe_loader_refuses_foreign_module_classes(reference_llara_dir, tmp_path):
    folder = _copy_folder(reference_llara_dir, tmp_path / "m")
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["type"] = "evil_package.Pooling"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(llara_st.UnsafeModelError, match="evil_package.Pooling"):
        llara_st.load(folder)


def test_safe_loader_needs_a_sentence_transformers_folder(tiny_llama_dir):
    with pytest.raises(FileNotFoundError, match="modules.json"):
        llara_st.load(tiny_llama_dir)


def test_cli_convert(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "cli_llara"
    assert cli_main(["convert", str(tiny_llama_dir), str(out), "--passage-max-length", "100"]) == 0
    model = llara_st.load(out)
    assert model[0].passage_max_length == 100
    assert "Saved LLaRA model" in capsys.readouterr().out


def test_tokenizer_without_bos_gets_no_bos(tiny_llama_dir, tmp_path):
    """SmolLM2-style tokenizers add no BOS: the prefix is the quote alone."""
    model = llara_st.build_llara_model(str(tiny_llama_dir))
    model[0].tokenizer.add_bos_token = False
    tokenizer = model[0].tokenizer
    tokenizer.save_pretrained(tmp_path / "nobos")
    no_bos = AutoTokenizer.from_pretrained(tmp_path / "nobos")
    if no_bos('"')["input_ids"][0] == no_bos.bos_token_id:
        pytest.skip("this tokenizer cannot switch BOS off")
    model[0].model.save_pretrained(tmp_path / "nobos")
    transformer = llara_st.LLaRATransformer(str(tmp_path / "nobos"))
    assert transformer.prefix_ids == no_bos('"', add_special_tokens=False)["input_ids"]
    assert transformer.tokenizer.bos_token_id not in transformer.prefix_ids


# ------------------------------------------------------------------------------ one loader, one accessor (issue 12.2)


def test_llara_module_is_the_one_way_to_reach_the_input_module(reference_llara):
    from torch import nn

    from llara_st.model import llara_module

    assert llara_module(reference_llara) is reference_llara[0]
    assert llara_module(reference_llara[0]) is reference_llara[0]

    class Wrapper(nn.Module):  # what DDP and DeepSpeed's engine look like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert llara_module(Wrapper(reference_llara)) is reference_llara[0]
    other = nn.Sequential(nn.Linear(2, 2))
    assert llara_module(other) is None
    with pytest.raises(TypeError, match="LLaRATransformer.*got Linear"):
        llara_module(other, required=True)


def test_one_loader_reads_folders_with_or_without_trusting_code(reference_llara_dir, reference_llara):
    expected = reference_llara.encode_query(["what causes tides?"])
    for model in (
        llara_st.load(reference_llara_dir, device="cpu", trust_remote_code=True),
        llara_st.load(reference_llara_dir, device="cpu"),
    ):
        assert np.array_equal(model.encode_query(["what causes tides?"]), expected)


def test_an_unconverted_causal_lm_is_told_to_convert(tiny_llama_dir):
    with pytest.raises(FileNotFoundError, match="llara-st convert"):
        llara_st.load(tiny_llama_dir)
