"""napari-clickseg: click-based deep interactive segmentation for napari.

Importing the package is cheap: torch, Qt and napari are imported only by the
submodules that need them.
"""

__version__ = "0.1.0"
