"""The base class of llara_st's errors that are the user's to fix, not bugs of llara_st."""

from __future__ import annotations


class LLaRAUserError(ValueError):
    """A mistake in the user's settings, data, files or training run, as opposed to a bug of llara_st.

    The ``llara-st`` command line prints these as one line and exits with code 1 (``--debug`` shows the traceback).
    """


__all__ = ["LLaRAUserError"]
