"""llara_st.load reads only safetensors and llara_st/sentence-transformers classes from inside the folder (issue 11,
points 4 and 5), and Hub ids through the Hugging Face cache, offline included (issue 13, point 5)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import llara_st
from llara_st import UnsafeModelError

TEXTS = ["what causes tides?", "Insulin lowers blood glucose."]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _outside_pickle_folder(path: Path) -> Path:
    """A folder outside the model folder with what llara_st.load must never read: code and a pickle."""
    path.mkdir()
    torch.save({"x": torch.zeros(1)}, path / "pytorch_model.bin")
    (path / "evil.py").write_text("import os\nos.system('echo pwned')\n")
    return path


# ------------------------------------------------------------------------------ 11.4: nothing outside the folder


def test_a_symlinked_subfolder_pointing_outside_is_refused(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    (folder / "extra").symlink_to(_outside_pickle_folder(tmp_path / "outside"), target_is_directory=True)
    with pytest.raises(UnsafeModelError, match="extra"):
        llara_st.load(folder)


def test_a_module_folder_symlinked_outside_is_refused(reference_llara_dir, tmp_path):
    """The issue's case: the module's weights come through a linked subfolder holding pytorch_model.bin."""
    folder = _copy(reference_llara_dir, tmp_path / "m")
    outside = tmp_path / "outside_pooling"
    shutil.move(folder / "1_LastKPooling", outside)
    torch.save({"x": torch.zeros(1)}, outside / "pytorch_model.bin")
    (folder / "1_LastKPooling").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeModelError, match="1_LastKPooling"):
        llara_st.load(folder)


def test_a_file_linked_outside_is_refused(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(folder / "tokenizer.json", outside / "tokenizer.json")
    (folder / "tokenizer.json").symlink_to(outside / "tokenizer.json")
    with pytest.raises(UnsafeModelError, match="tokenizer.json"):
        llara_st.load(folder)


def test_links_inside_the_folder_are_fine(reference_llara_dir, reference_llara, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    (folder / "weights").mkdir()
    shutil.move(folder / "model.safetensors", folder / "weights" / "model.safetensors")
    (folder / "model.safetensors").symlink_to(Path("weights") / "model.safetensors")
    loaded = llara_st.load(folder, device="cpu")
    np.testing.assert_array_equal(loaded.encode_query(TEXTS), reference_llara.encode_query(TEXTS))


def _shard_index(folder: Path, shard: str) -> dict:
    weights = load_file(folder / "model.safetensors")
    return {"metadata": {}, "weight_map": dict.fromkeys(weights, shard)}


def test_a_safetensors_index_naming_a_shard_outside_is_refused(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    (tmp_path / "outside").mkdir()
    index = _shard_index(folder, "../outside/model-00001-of-00001.safetensors")
    shutil.move(folder / "model.safetensors", tmp_path / "outside" / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeModelError, match=r"model\.safetensors\.index\.json.*\.\./outside"):
        llara_st.load(folder)


def test_a_pickle_index_is_refused_even_when_its_shards_have_no_pickle_suffix(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "weights-00001-of-00001")  # a pickle under a name no suffix check catches
    index = {"metadata": {}, "weight_map": dict.fromkeys(weights, "weights-00001-of-00001")}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsafeModelError, match=r"pytorch_model\.bin\.index\.json"):
        llara_st.load(folder)


def test_a_sharded_safetensors_checkpoint_inside_the_folder_loads(reference_llara_dir, reference_llara, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    weights = load_file(folder / "model.safetensors")
    names = sorted(weights)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        save_file({key: weights[key] for key in keys}, folder / shard, metadata={"format": "pt"})
    (folder / "model.safetensors").unlink()
    weight_map = {key: shard for shard, keys in halves.items() for key in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = llara_st.load(folder, device="cpu")
    np.testing.assert_array_equal(loaded.encode_document(TEXTS), reference_llara.encode_document(TEXTS))


def test_a_module_path_outside_the_folder_is_refused(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    shutil.copytree(folder / "1_LastKPooling", tmp_path / "pooling")
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["path"] = "../pooling"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UnsafeModelError, match=r"\.\./pooling"):
        llara_st.load(folder)


def test_an_adapters_base_folder_is_checked_too(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    base = _copy(reference_llara_dir, tmp_path / "base")
    (base / "modeling_evil.py").write_text("import os\n")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    with pytest.raises(UnsafeModelError, match="modeling_evil.py"):
        llara_st.load(folder)


def test_unsafe_errors_say_how_to_load_a_trusted_folder(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    (folder / "modeling_evil.py").write_text("import os\n")
    with pytest.raises(UnsafeModelError, match="trust_remote_code=True"):
        llara_st.load(folder)


# ------------------------------------------------------------------------------ 11.5: malformed modules.json


@pytest.mark.parametrize(
    ("modules", "message"),
    [
        (lambda m: [m[0], {k: v for k, v in m[1].items() if k != "type"}, m[2]], r"entry 1 .* has no 'type'"),
        (lambda m: {"0": m[0]}, r"must hold a non-empty JSON list .* got dict"),
        (lambda m: [m[0], m[1], {**m[2], "type": "sentence_transformers.util.cos_sim"}], "not a sentence-transformers"),
        (lambda m: [m[0], m[1], {**m[2], "type": "sentence_transformers.NoSuchModule"}], "does not have"),
        (lambda m: [m[0], "1_LastKPooling", m[2]], "entry 1 must be an object"),
        (lambda m: [m[0], {**m[1], "path": 1}], r"entry 1 .* non-string .* 'path'"),
    ],
    ids=["no-type", "dict", "function-not-module", "missing-class", "string-entry", "non-string-path"],
)
def test_malformed_modules_json_says_what_is_wrong(reference_llara_dir, tmp_path, modules, message):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    original = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(modules(original)))
    with pytest.raises(ValueError, match=message):
        llara_st.load(folder)


def test_modules_json_that_is_not_json_names_the_line(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    (folder / "modules.json").write_text('[\n  {"type": "x",\n}\n]')
    with pytest.raises(ValueError, match=r"modules\.json is not valid JSON \(line 3"):
        llara_st.load(folder)


# ------------------------------------------------------------------------------ 13.5: Hub ids, offline


def _hub_cache(cache: Path, repo_id: str, source: Path, *, revision_ref: str = "main") -> Path:
    """The Hugging Face cache layout snapshot_download leaves: snapshot files are links into ``blobs``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision_ref).write_text(COMMIT)
    (repo / "blobs").mkdir()
    for index, file in enumerate(sorted(p for p in source.rglob("*") if p.is_file())):
        relative = file.relative_to(source)
        blob = repo / "blobs" / f"{index:040x}"
        shutil.copyfile(file, blob)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # "org/name" must not happen to be a folder here
    return tmp_path / "hub-cache"


def test_a_hub_id_loads_offline_from_the_local_cache(reference_llara_dir, reference_llara, offline):
    _hub_cache(offline, "someone/llara-tiny", reference_llara_dir)
    loaded = llara_st.load("someone/llara-tiny", cache_folder=str(offline), device="cpu")
    np.testing.assert_array_equal(loaded.encode_query(TEXTS), reference_llara.encode_query(TEXTS))
    by_commit = llara_st.load("someone/llara-tiny", cache_folder=str(offline), revision=COMMIT, device="cpu")
    np.testing.assert_array_equal(by_commit.encode_document(TEXTS), reference_llara.encode_document(TEXTS))


def test_a_hub_id_uses_sentence_transformers_home_as_cache(reference_llara_dir, offline, monkeypatch):
    _hub_cache(offline, "someone/llara-tiny", reference_llara_dir)
    monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(offline))
    assert isinstance(llara_st.load("someone/llara-tiny", device="cpu")[0], llara_st.LLaRATransformer)


def test_an_authors_checkpoint_loads_from_a_folder_and_from_the_hub_cache(fixture_dir, reference_llara, offline):
    expected = reference_llara.encode_query(TEXTS)
    from_folder = llara_st.load(fixture_dir / "model", device="cpu")
    np.testing.assert_allclose(from_folder.encode_query(TEXTS), expected, atol=1e-6)
    _hub_cache(offline, "BAAI/LLARA-tiny", fixture_dir / "model")
    from_hub = llara_st.load("BAAI/LLARA-tiny", cache_folder=str(offline), device="cpu")
    np.testing.assert_allclose(from_hub.encode_query(TEXTS), expected, atol=1e-6)


def test_offline_and_not_cached_says_so(offline):
    with pytest.raises(FileNotFoundError, match=r"'someone/absent'.*Hugging Face cache.*HF_HUB_OFFLINE"):
        llara_st.load("someone/absent", cache_folder=str(offline))


def test_local_files_only_without_a_cached_copy_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"local_files_only=True"):
        llara_st.load("someone/absent", cache_folder=str(tmp_path / "cache"), local_files_only=True)


def test_a_hub_snapshot_gets_the_same_checks(reference_llara_dir, offline, tmp_path):
    snapshot = _hub_cache(offline, "someone/evil", reference_llara_dir)
    (snapshot / "modeling_evil.py").write_text("import os\n")
    with pytest.raises(UnsafeModelError, match="modeling_evil.py"):
        llara_st.load("someone/evil", cache_folder=str(offline))


def test_a_hub_snapshot_link_leaving_its_repository_is_refused(reference_llara_dir, offline, tmp_path):
    snapshot = _hub_cache(offline, "someone/leaky", reference_llara_dir)
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (snapshot / "tokenizer_config.json").unlink()
    (snapshot / "tokenizer_config.json").symlink_to(secret)
    with pytest.raises(UnsafeModelError, match="tokenizer_config.json"):
        llara_st.load("someone/leaky", cache_folder=str(offline))


def test_a_path_that_is_neither_folder_nor_hub_id_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        llara_st.load(tmp_path / "nothing" / "here")


# ------------------------------------------------------------------------------ 16.4: paths in sentence_bert_config


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("processor_kwargs", "tokenizer_file", "{outside}/tokenizer.json"),
        ("processor_kwargs", "tokenizer_file", "../outside/tokenizer.json"),
        ("tokenizer_args", "tokenizer_file", "{outside}/tokenizer.json"),  # the old key name
        ("model_kwargs", "gguf_file", "{outside}/model.gguf"),
        ("model_kwargs", "gguf_file", "../outside/model.gguf"),
        ("config_kwargs", "gguf_file", "{outside}/model.gguf"),
        ("model_kwargs", "offload_folder", "{outside}/offload"),
        ("model_args", "offload_folder", "offload"),  # written, even inside: the caller chooses where to write
        ("processor_kwargs", "vocab_file", "{outside}/vocab.json"),
        (None, "tokenizer_name_or_path", "{outside}"),
        ("model_kwargs", "subfolder", "../outside"),  # was never checked: no "_folder" suffix
        ("config_kwargs", "subfolder", "{outside}"),
    ],
)
def test_sentence_bert_config_naming_a_path_outside_is_refused(reference_llara_dir, tmp_path, section, key, value):
    """Issue 16.4: llara_st.load followed paths in sentence_bert_config.json out of the model folder."""
    folder = _copy(reference_llara_dir, tmp_path / "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(folder / name, outside / name)
    value = value.format(outside=outside)

    def edit(config: dict) -> None:
        (config.setdefault(section, {}) if section else config)[key] = value

    _edit_json(folder / "sentence_bert_config.json", edit)
    name = f"{section}.{key}" if section else key
    with pytest.raises(UnsafeModelError, match=rf"sentence_bert_config\.json.*{re.escape(name)}"):
        llara_st.load(folder)
    assert sorted(path.name for path in outside.iterdir()) == ["config.json", "tokenizer.json", "tokenizer_config.json"]


def test_a_gguf_file_inside_the_folder_is_not_refused_as_unsafe(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    _edit_json(
        folder / "sentence_bert_config.json", lambda c: c.setdefault("model_kwargs", {}).update(gguf_file="x.gguf")
    )
    with pytest.raises(Exception) as error:  # noqa: B017 (transformers' own error: the file is absent)
        llara_st.load(folder)
    assert not isinstance(error.value, UnsafeModelError)


# ------------------------------------------------------------------------------ 16.5 and 16.9: broken folders


def test_a_half_written_sentence_transformers_folder_is_not_an_authors_checkpoint(reference_llara_dir, tmp_path):
    """Issue 16.5: killed before modules.json, a save loaded as an "authors' checkpoint" with other max lengths."""
    folder = _copy(reference_llara_dir, tmp_path / "m")
    (folder / "modules.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"incomplete.*no modules\.json"):
        llara_st.load(folder)


def test_a_folder_marked_degenerate_is_refused(reference_llara_dir, tmp_path):
    """Issue 16.9: collapsed checkpoints loaded (with all-zero embeddings)."""
    from llara_st.folders import DEGENERATE_MARKER

    folder = _copy(reference_llara_dir, tmp_path / "m")
    (folder / DEGENERATE_MARKER).write_text(json.dumps({"reason": "probe embeddings collapsed to one vector"}))
    for trust_remote_code in (False, True):
        with pytest.raises(ValueError, match=r"collapsed to one vector.*llara_degenerate\.json"):
            llara_st.load(folder, trust_remote_code=trust_remote_code)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}", "model.safetensors"),
        ("model.safetensors", None, "model.safetensors"),  # truncated
        ("tokenizer.json", b"garbage", r"tokenizer\.json is not valid JSON \(line 1"),
        ("tokenizer.json", b'{"version": "1.0", "model": 7}', "tokenizer.json"),
        ("config_sentence_transformers.json", b"{,}", r"config_sentence_transformers\.json is not valid JSON"),
        ("config_sentence_transformers.json", b"[1, 2]", r"config_sentence_transformers\.json must hold"),
        ("modules.json", b"[" * 100_000 + b"]" * 100_000, r"modules\.json is nested too deeply"),
    ],
    ids=["safetensors-header", "safetensors-truncated", "tokenizer-json", "tokenizer-shape", "st-config-json",
         "st-config-list", "deep-modules-json"],
)  # fmt: skip
def test_errors_name_the_broken_file(reference_llara_dir, tmp_path, name, content, message):
    """Issue 16.9: corrupt safetensors, a garbage tokenizer.json and a malformed config_sentence_transformers.json
    gave errors that did not name the file; a deeply nested modules.json raised RecursionError."""
    folder = _copy(reference_llara_dir, tmp_path / "m")
    if content is None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    else:
        (folder / name).write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        llara_st.load(folder)
    assert str(folder) in str(error.value)


def test_a_symlink_loop_in_the_folder_is_refused_naming_it(reference_llara_dir, tmp_path):
    folder = _copy(reference_llara_dir, tmp_path / "m")
    (folder / "loop").symlink_to(folder / "loop")
    with pytest.raises(UnsafeModelError, match="loop.*symlink loop"):
        llara_st.load(folder)
