"""_napari subpackage."""
