"""Replacing only folders llara_st made, written beside and moved into place (docs/training_guards.md, "Folders"),
and the one content hash of llara_st (:func:`content_digest`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from llara_st.errors import LLaRAUserError

#: The record of a training run in its ``output_dir`` (written by :class:`llara_st.training.RunFingerprint`).
RUN_RECORD_NAME = "llara_run.json"
#: Written into the checkpoints of a run whose model collapsed or diverged: :func:`llara_st.load` refuses them.
DEGENERATE_MARKER = "llara_degenerate.json"
# A file over content_digest's sample_above is read as this many evenly spaced samples of this size.
_SAMPLE_COUNT, _SAMPLE_SIZE = 16, 2**16


class FolderNotOursError(LLaRAUserError):
    """llara_st was asked to remove or replace a folder it did not write (or the working directory)."""


def is_llara_model_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` has a ``modules.json`` whose first module is a llara_st class."""
    try:
        entries = json.loads((Path(folder) / "modules.json").read_text(encoding="utf8"))
        return str(entries[0]["type"]).startswith("llara_st.")
    except (OSError, ValueError, LookupError, TypeError):
        return False


def made_by_llara(folder: str | os.PathLike) -> bool:
    """Whether llara_st may remove or replace ``folder``: a run folder (``llara_run.json``) or a LLaRA model."""
    folder = Path(folder)
    return (folder / RUN_RECORD_NAME).is_file() or is_llara_model_folder(folder)


def check_replaceable(folder: str | os.PathLike, what: str = "output folder") -> None:
    """Raise :class:`FolderNotOursError` unless ``folder`` is absent, empty or :func:`made_by_llara`, and always for
    the working directory or a folder holding it; ``what`` names it in the error (e.g. ``"final_model_dir"``)."""
    path = Path(folder).expanduser()
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() and not path.exists():
        raise FolderNotOursError(f"{what} {path} is a broken link or a symlink loop; llara_st does not replace it")
    if not path.is_dir():
        raise FolderNotOursError(f"{what} {path} is a file, not a folder; llara_st does not replace it")
    here = Path.cwd().resolve()
    resolved = path.resolve()
    if resolved == here or resolved in here.parents:
        raise FolderNotOursError(f"{what} {path} is the working directory (or holds it): choose a new folder")
    if not any(path.iterdir()) or made_by_llara(path):
        return
    raise FolderNotOursError(
        f"{what} {path} exists and was not written by llara_st (no LLaRA model, no {RUN_RECORD_NAME}): move it away "
        f"or choose another {what}"
    )


def replace_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move the complete folder ``new`` to ``target`` (a sibling), replacing ``target`` if it exists: the old
    folder is renamed aside first and removed only once ``new`` is in place (restored if that move fails)."""
    new, target = Path(new), Path(os.path.abspath(Path(target).expanduser()))
    if not target.exists() and not target.is_symlink():
        os.replace(new, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    aside.rmdir()
    os.replace(target, aside)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(aside, target)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    else:
        aside.unlink()


@contextlib.contextmanager
def staged_folder(target: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """An empty folder beside ``target`` (checked first with :func:`check_replaceable`) to write into; when the
    block ends without an error it replaces ``target``, else it is removed and ``target`` is left as it was.

    Example::

        >>> from pathlib import Path
        >>> from llara_st.folders import staged_folder
        >>> with staged_folder("llara-final", "final_model_dir") as staging:
        ...     model.save(str(staging))  # a kill here leaves no half-written llara-final
        >>> (Path("llara-final") / "modules.json").is_file()
        True
    """
    target = Path(os.path.abspath(Path(target).expanduser()))
    check_replaceable(target, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.writing-", dir=target.parent))
    try:
        yield staging
        check_replaceable(target, what)  # it may have changed while the model was written
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def save_model_staged(model, folder: str | os.PathLike, what: str = "output folder", **save_kwargs) -> Path:
    """``model.save(folder, safe_serialization=True, ...)`` through :func:`staged_folder`: the folder is the whole
    model or, if the save fails or is killed, what it was before."""
    save_kwargs.setdefault("safe_serialization", True)
    with staged_folder(folder, what) as staging:
        model.save(str(staging), **save_kwargs)
    return Path(folder)


def content_digest(
    parts: bytes | os.PathLike | Iterable[bytes | os.PathLike], *, sample_above: int | None = None
) -> str:
    """The sha256 (hex) of ``parts`` (one part or an iterable, read lazily), fed in order into one digest.

    ``bytes`` go in as they are (a ``str`` is refused); a file by its content, or, over ``sample_above`` bytes, by 16
    evenly spaced 64 KiB samples; a folder as ``"{relative name}\\0{digest of size and content}\\0"`` for each
    file, sorted, hidden entries skipped (a renamed, added or edited file changes the digest, a copy keeps it).

    Example::

        >>> from pathlib import Path
        >>> from llara_st.folders import content_digest
        >>> _ = Path("notes.txt").write_text("tides")
        >>> content_digest(Path("notes.txt")) == content_digest(b"tides") == content_digest([b"ti", b"des"])
        True
    """
    digest = hashlib.sha256()
    for part in [parts] if isinstance(parts, bytes | os.PathLike) else parts:
        if isinstance(part, bytes):
            digest.update(part)
        elif not isinstance(part, os.PathLike):
            raise TypeError(f"content_digest takes bytes and paths (os.PathLike), got {type(part).__name__}")
        elif Path(part).is_dir():
            folder = Path(part)
            for file in sorted(folder.rglob("*")):
                relative = file.relative_to(folder)
                if file.is_file() and not any(name.startswith(".") for name in relative.parts):
                    inner = content_digest([str(file.stat().st_size).encode(), file], sample_above=sample_above)
                    digest.update(f"{relative.as_posix()}\0{inner}\0".encode())
        else:
            size = Path(part).stat().st_size
            with Path(part).open("rb") as handle:
                if sample_above is None or size <= sample_above:
                    for block in iter(lambda: handle.read(2**20), b""):
                        digest.update(block)
                else:
                    for index in range(_SAMPLE_COUNT):
                        handle.seek((size - _SAMPLE_SIZE) * index // (_SAMPLE_COUNT - 1))
                        digest.update(handle.read(_SAMPLE_SIZE))
    return digest.hexdigest()


__all__ = [
    "DEGENERATE_MARKER", "RUN_RECORD_NAME", "FolderNotOursError", "check_replaceable", "content_digest",
    "is_llara_model_folder", "made_by_llara", "replace_folder", "save_model_staged", "staged_folder",
]  # fmt: skip
