"""``python -m napari_clickseg``: the ``napari-clickseg`` command line."""

import sys

from .cli import main

sys.exit(main())
