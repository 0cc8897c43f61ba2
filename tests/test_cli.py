"""The ``llara-st`` command line: user errors as one line, --version, sub-command registration, convert's output."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import llara_st
from llara_st.cli import SUBCOMMAND_MODULES, UserError, build_parser, main


def _error_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return [line for line in captured.err.splitlines() if line.strip()]


def test_version_names_llara_st_and_the_libraries_it_runs_on(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"llara-st {llara_st.__version__} (sentence-transformers ")
    assert "transformers " in printed and "torch " in printed


@pytest.mark.slow  # a fresh interpreter imports torch and sentence-transformers
def test_the_console_script_prints_one_line_for_a_missing_source(tmp_path):
    """Issue 13.4's example: `llara-st convert /nonexistent out` ended in an 18-line OSError traceback."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from llara_st.cli import main; sys.exit(main())"]
        + ["convert", str(tmp_path / "nonexistent"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        f"llara-st convert: error: source '{tmp_path / 'nonexistent'}' is neither an existing folder nor a Hub id "
        "(organization/model)"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("not/a/hub/id", "is neither an existing folder nor a Hub id"),
        ("{tmp}/file.gguf", "is a file; give a model folder or a Hub id"),
        ("{tmp}", "has no config.json: it is not a Hugging Face model folder"),
    ],
)
def test_convert_names_a_bad_source_in_one_line(source, problem, tmp_path, capsys):
    (tmp_path / "file.gguf").write_text("not a model")
    assert main(["convert", source.format(tmp=tmp_path), str(tmp_path / "out")]) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith("llara-st convert: error: ") and problem in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(UserError, match="neither an existing folder nor a Hub id"):
        main(["convert", "--debug", str(tmp_path / "nonexistent"), str(tmp_path / "out")])


def test_convert_refuses_a_non_empty_output_folder_unless_overwrite(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["convert", str(tiny_llama_dir), str(out)]) == 1
    (line,) = _error_lines(capsys)
    assert "output folder" in line and "is not empty" in line and "--overwrite" in line
    # --overwrite replaces model folders only, never an arbitrary folder of the user's.
    assert main(["convert", str(tiny_llama_dir), str(out), "--overwrite"]) == 1
    (line,) = _error_lines(capsys)
    assert "not a sentence-transformers folder (no modules.json)" in line
    assert (out / "notes.txt").read_text() == "keep me"

    model_dir = tmp_path / "model"
    assert main(["convert", str(tiny_llama_dir), str(model_dir), "--query-max-length", "100"]) == 0
    stale = model_dir / "stale.txt"
    stale.write_text("from an earlier conversion")
    assert main(["convert", str(tiny_llama_dir), str(model_dir)]) == 1
    assert stale.exists()
    assert main(["convert", str(tiny_llama_dir), str(model_dir), "--overwrite"]) == 0
    assert not stale.exists()  # replaced as a whole, not written over
    config = json.loads((model_dir / "sentence_bert_config.json").read_text())
    assert config["query_max_length"] != 100
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no staging left
    assert llara_st.load(model_dir).encode_query(["a query"]).shape[0] == 1


_PLUGIN = """
import logging
import warnings

from llara_st.cli import UserError


def add_parser(subparsers):
    for name in ("shout", "fail", "work"):
        parser = subparsers.add_parser(name)
        parser.add_argument("what")
        parser.set_defaults(func=run, progress_logs=name == "work")


def run(args):
    logging.getLogger("mteb").info("an mteb cache notice")
    logging.getLogger("llara_st.plugin").info("stage 1 of 3 done")
    logging.getLogger("llara_st.plugin").warning("a warning the user must see")
    if args.what == "user":
        raise UserError("the value 7 is out of range")
    if args.what == "missing-file":
        open("/nonexistent/corpus.jsonl")
    if args.what == "missing-extra":
        import mteb_not_installed_for_this_test  # noqa: F401
    if args.what == "extra":
        raise ModuleNotFoundError("No module named 'mteb'", name="mteb")
    if args.what == "bug":
        raise RuntimeError("an internal bug keeps its traceback")
    print("done")
    return 0
"""


@pytest.fixture
def plugin_cli(tmp_path, monkeypatch):
    """A sub-command module registered the way other helpers register theirs: one entry in SUBCOMMAND_MODULES."""
    (tmp_path / "llara_cli_test_plugin.py").write_text(textwrap.dedent(_PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("llara_st.cli.SUBCOMMAND_MODULES", [*SUBCOMMAND_MODULES, "llara_cli_test_plugin"])


def test_registered_subcommands_get_central_error_handling(plugin_cli, capsys):
    assert main(["shout", "user"]) == 1
    assert _error_lines(capsys)[-1] == "llara-st shout: error: the value 7 is out of range"
    assert main(["fail", "missing-file"]) == 1
    assert _error_lines(capsys)[-1].startswith("llara-st fail: error: [Errno 2] No such file or directory")
    assert main(["fail", "extra"]) == 1
    assert _error_lines(capsys)[-1] == (
        "llara-st fail: error: this needs mteb, which is not installed: pip install 'llara-st[mteb]' "
        "(--debug shows the traceback)"
    )
    # A module that is not one of llara-st's extras, or any other exception, is a bug: the traceback stays.
    with pytest.raises(ModuleNotFoundError):
        main(["fail", "missing-extra"])
    with pytest.raises(RuntimeError, match="internal bug"):
        main(["fail", "bug"])


def test_logging_is_quiet_by_default_and_verbose_with_v(plugin_cli, capsys):
    assert main(["shout", "ok"]) == 0
    err = capsys.readouterr().err
    assert "a warning the user must see" in err and "mteb cache notice" not in err
    for argv in (["-v", "shout", "ok"], ["shout", "ok", "-v"]):
        assert main(argv) == 0
        assert "INFO mteb: an mteb cache notice" in capsys.readouterr().err


def test_workflows_log_their_own_progress_without_v(plugin_cli, capsys):
    assert main(["shout", "ok"]) == 0
    assert "stage 1 of 3" not in capsys.readouterr().err
    # A sub-command with progress_logs (the training workflows, and so the recipes over them) shows llara_st's own
    # INFO logs, and only those: the libraries stay quiet until -v.
    assert main(["work", "ok"]) == 0
    err = capsys.readouterr().err
    assert "INFO llara_st.plugin: stage 1 of 3 done" in err and "mteb cache notice" not in err
    assert logging.getLogger("llara_st").level == logging.NOTSET  # restored after the command
    for command in ("adapt", "finetune", "reproduce", "study"):
        assert build_parser().parse_args([command, "config.yaml"]).progress_logs is True


# ------------------------------------------------------------------------------ issue 16: never lose a user's files


def test_convert_overwrite_into_the_working_directory_leaves_it_as_it_was(
    tiny_llama_dir, tmp_path, monkeypatch, capsys
):
    """Issue 16.2: `llara-st convert SRC . --overwrite` emptied the folder (model, notes, sub-folders), then failed
    with `[Errno 22] Invalid argument: '.'`, leaving nothing."""
    here = tmp_path / "work"
    assert main(["convert", str(tiny_llama_dir), str(here)]) == 0
    (here / "notes.txt").write_text("my notes")
    (here / "experiments").mkdir()
    (here / "experiments" / "run.yaml").write_text("seed: 1\n")
    before = sorted(path.relative_to(here).as_posix() for path in here.rglob("*"))
    monkeypatch.chdir(here)
    capsys.readouterr()
    assert main(["convert", str(tiny_llama_dir), ".", "--overwrite"]) == 1
    (line,) = _error_lines(capsys)
    assert "working directory" in line
    assert sorted(path.relative_to(here).as_posix() for path in here.rglob("*")) == before
    assert (here / "notes.txt").read_text() == "my notes"


def test_convert_overwrite_that_fails_leaves_the_old_model(tiny_llama_dir, tmp_path, monkeypatch, capsys):
    """Issue 16.2: a failed conversion leaves DST as it was, and no staging folder beside it."""
    model_dir = tmp_path / "model"
    assert main(["convert", str(tiny_llama_dir), str(model_dir)]) == 0
    weights = (model_dir / "model.safetensors").read_bytes()

    def fail_after_writing(src, dst, **kwargs):
        (Path(dst) / "model.safetensors").write_bytes(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr("llara_st.model.convert", fail_after_writing)
    assert main(["convert", str(tiny_llama_dir), str(model_dir), "--overwrite"]) == 1
    assert "No space left on device" in _error_lines(capsys)[-1]
    assert (model_dir / "model.safetensors").read_bytes() == weights
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("output_dir: out\n\tseed: 3\n", "line 2"),  # a tab in the indentation
        ("output_dir: [out\nseed: 3\n", "line 2"),  # an unclosed list
    ],
    ids=["tab", "unclosed list"],
)
def test_malformed_yaml_is_one_line_naming_file_and_line(text, problem, tmp_path, capsys):
    """Issue 16.7: a YAML config with a tab, or otherwise malformed, ended in a scanner traceback."""
    config = _write(tmp_path / "adapt.yaml", text)
    for command in ("adapt", "finetune", "reproduce"):
        assert main([command, str(config)]) == 1
        (line,) = _error_lines(capsys)
        assert line.startswith(f"llara-st {command}: error: ") and str(config) in line and problem in line
    with pytest.raises(ValueError, match="is not valid YAML"):
        main(["adapt", str(config), "--debug"])


def test_a_stale_run_is_one_line(tiny_llara_dir, tmp_path, capsys):
    """Issue 16.7: a stale run (StaleRunError) ended in a traceback; --debug still shows it."""
    output = tmp_path / "run"
    (output / "checkpoint-3").mkdir(parents=True)
    config = _write(
        tmp_path / "finetune.yaml",
        f"model_name_or_path: {tiny_llara_dir}\noutput_dir: {output}\ntrain_data: {tmp_path / 'data'}\n",
    )
    assert main(["finetune", str(config)]) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith("llara-st finetune: error: output_dir") and "recorded no settings" in line
    from llara_st.training.checkpoints import StaleRunError

    with pytest.raises(StaleRunError):
        main(["finetune", str(config), "--debug"])


@pytest.mark.parametrize("kind", ["diverged", "collapsed"])
def test_a_diverged_or_collapsed_run_is_one_line(kind, tmp_path, monkeypatch, capsys):
    """Issue 16.7: divergence and a collapsed model ended in a traceback."""
    from llara_st.training.guards import DegenerateEmbeddingsError, TrainingDivergedError

    error = (
        TrainingDivergedError("training diverged at step 3: the loss is nan")
        if kind == "diverged"
        else DegenerateEmbeddingsError("the model's probe embeddings collapsed to one vector")
    )

    def run(*args, **kwargs):
        raise error

    monkeypatch.setattr("llara_st.training.run_finetuning", run)
    config = _write(tmp_path / "finetune.yaml", f"model_name_or_path: m\noutput_dir: {tmp_path / 'run'}\n")
    assert main(["finetune", str(config)]) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith(f"llara-st finetune: error: {error}")
    with pytest.raises(type(error)):
        main(["finetune", str(config), "--debug"])


def test_a_symlink_loop_in_a_model_folder_is_one_line(tiny_llara_dir, tmp_path, capsys):
    """Issue 16.7: a symlink loop in a folder ended in `RuntimeError: Symlink loop` (Python 3.11)."""
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_llara_dir, model_dir)
    (model_dir / "a").symlink_to(model_dir / "b")
    (model_dir / "b").symlink_to(model_dir / "a")
    out = tmp_path / "out"
    out.mkdir()
    (out / "loop").symlink_to(out / "loop")
    with pytest.raises(llara_st.UnsafeModelError, match="symlink loop"):
        llara_st.load(model_dir)
    # A DST that is a symlink loop used to be replaced silently (rename over the link).
    assert main(["convert", str(model_dir), str(out / "loop")]) == 1
    (line,) = _error_lines(capsys)
    assert "symlink loop" in line
    assert (out / "loop").is_symlink()
