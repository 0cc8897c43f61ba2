"""The base class of llara_st's errors that are the user's to fix, not bugs of llara_st."""

from __future__ import annotations


class LLaRAUserError(ValueError):
    """A mistake in the user's settings, data, files or training run (a stale run, a diverged or collapsed model,
    a folder llara_st may not replace, a malformed config), as opposed to a bug of llara_st.

    The ``llara-st`` command line prints these as one line and exits with code 1 (``--debug`` shows the
    traceback). Subclasses may also derive from another built-in error (``RuntimeError``) for compatibility.
    """


__all__ = ["LLaRAUserError"]
