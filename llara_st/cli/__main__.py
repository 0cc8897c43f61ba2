"""``python -m llara_st.cli``: the ``llara-st`` command."""

import sys

from llara_st.cli import main

sys.exit(main())
