"""llara_st.folders: llara_st deletes only what it made, and replaces a folder only once the new one is complete
(issue 16, docs/training_guards.md "Folders")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llara_st.folders import (
    RUN_RECORD_NAME,
    FolderNotOursError,
    check_replaceable,
    content_digest,
    is_llara_model_folder,
    replace_folder,
    staged_folder,
)


def _llara_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    entries = [{"idx": 0, "name": "0", "path": "", "type": "llara_st.modules.llara_transformer.LLaRATransformer"}]
    (folder / "modules.json").write_text(json.dumps(entries))
    (folder / "model.safetensors").write_text("old weights")
    return folder


def test_only_absent_empty_or_llara_folders_may_be_replaced(tmp_path, monkeypatch):
    check_replaceable(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    check_replaceable(_llara_model(tmp_path / "model"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_RECORD_NAME).write_text("{}")
    check_replaceable(tmp_path / "run")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FolderNotOursError, match=r"final_model_dir .*mine exists and was not written by llara_st"):
        check_replaceable(tmp_path / "mine", "final_model_dir")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FolderNotOursError, match="is a file"):
        check_replaceable(tmp_path / "file")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(FolderNotOursError, match="symlink loop"):
        check_replaceable(tmp_path / "loop")
    monkeypatch.chdir(tmp_path / "model")
    for folder in (".", str(tmp_path)):  # the working directory, or a folder holding it: never, even a model
        with pytest.raises(FolderNotOursError, match="working directory"):
            check_replaceable(folder)


def test_a_model_of_another_library_is_not_llara_st_s(tmp_path):
    folder = tmp_path / "minilm"
    folder.mkdir()
    entries = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.Transformer"}]
    (folder / "modules.json").write_text(json.dumps(entries))
    assert not is_llara_model_folder(folder)
    assert is_llara_model_folder(_llara_model(tmp_path / "llara"))


def test_a_staged_folder_replaces_the_old_one_only_when_complete(tmp_path):
    target = _llara_model(tmp_path / "final")
    with pytest.raises(OSError, match="disk full"):
        with staged_folder(target) as staging:
            (staging / "model.safetensors").write_text("half")
            raise OSError("disk full")
    assert (target / "model.safetensors").read_text() == "old weights"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["final"]  # no staging left

    with staged_folder(target) as staging:
        (staging / "model.safetensors").write_text("new weights")
        assert (target / "model.safetensors").read_text() == "old weights"  # untouched while writing
    assert sorted(path.name for path in target.iterdir()) == ["model.safetensors"]  # replaced whole
    assert (target / "model.safetensors").read_text() == "new weights"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["final"]


def test_replace_folder_restores_the_old_folder_if_the_new_one_cannot_move(tmp_path):
    target = _llara_model(tmp_path / "final")
    with pytest.raises(OSError):
        replace_folder(tmp_path / "no-such-staging", target)
    assert (target / "model.safetensors").read_text() == "old weights"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["final"]


# ---------------------------------------------------------------------------------------------- content_digest


def test_content_digest_is_sha256_of_its_parts_in_order(tmp_path):
    """One hasher behind the model fingerprint, the BEIR revision and the run record (issue 19): the digests they
    recorded before it stay the same."""
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"tides" * 300_000)  # over the 1 MiB read block
    expected = hashlib.sha256(b"corpus.jsonl" + notes.read_bytes()).hexdigest()
    assert content_digest([b"corpus.jsonl", notes]) == expected
    assert content_digest(part for part in (b"corpus.jsonl", notes)) == expected  # a generator, read lazily
    assert content_digest(b"abc") == hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(TypeError, match="bytes and paths"):
        content_digest(["notes.txt"])


def test_a_folder_digest_holds_names_sizes_and_contents_but_not_hidden_files(tmp_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00\x01")

    def entry(name: str, data: bytes) -> bytes:
        return f"{name}\0{hashlib.sha256(str(len(data)).encode() + data).hexdigest()}\0".encode()

    expected = hashlib.sha256(entry("config.json", b"{}") + entry("sub/weights.bin", b"\x00\x01")).hexdigest()
    assert content_digest(folder) == expected
    (folder / ".cache").write_text("not content")
    assert content_digest(folder) == expected
    (folder / "sub" / "weights.bin").rename(folder / "sub" / "weights2.bin")
    assert content_digest(folder) != expected


def test_a_large_file_is_digested_by_samples(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: 16 samples of 64 KiB leave gaps
    whole = content_digest(big)
    assert content_digest(big, sample_above=2**21) == whole  # not over the limit: every byte
    sampled = content_digest(big, sample_above=2**20)
    assert sampled != whole
    data = bytearray(big.read_bytes())
    data[2**16 + 5] ^= 1  # between the first two samples: not read
    big.write_bytes(bytes(data))
    assert content_digest(big, sample_above=2**20) == sampled
    data[0] ^= 1  # in the first sample
    big.write_bytes(bytes(data))
    assert content_digest(big, sample_above=2**20) != sampled
