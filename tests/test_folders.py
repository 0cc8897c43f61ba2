"""llara_st.folders: llara_st deletes only what it made, and replaces a folder only once the new one is complete
(issue 16, docs/training_guards.md "Folders")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llara_st.folders import (
    RUN_RECORD_NAME,
    FolderNotOursError,
    check_replaceable,
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
