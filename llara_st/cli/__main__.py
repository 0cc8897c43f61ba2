"""``python -m llara_st.cli``: the ``llara-st`` command."""

import sys

from llara_st.cli import main

if __name__ == "__main__":  # not when imported (pytest's --doctest-modules imports every module of the package)
    sys.exit(main())
