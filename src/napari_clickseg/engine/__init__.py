"""Inference engine: ``Predictor`` (set_image -> predict(clicks)), zoom-in, BRS/f-BRS, post-processing.

>>> from napari_clickseg.engine import Predictor
>>> p = Predictor(create_model("early"), device="cpu")      # doctest: +SKIP
>>> p.set_image(image); prob = p.predict([(101, 99, True)])  # doctest: +SKIP
"""

from .predictor import Predictor

__all__ = ["Predictor"]
