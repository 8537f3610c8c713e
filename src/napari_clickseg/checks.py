"""The engine's settings as torch-free code needs them, and the range check of numbers.

``Predictor`` checks its settings with ``ENGINE_LIMITS`` whenever one is set, and
a weights file's ``engine`` metadata (``weights.ENGINE_SETTINGS``) is checked
against the same bounds, so any setting a Predictor runs with can be saved.
``BRS_MODES`` are the values of ``Predictor.predict(brs=...)``, which the command
lines offer without importing torch.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["BRS_MODES", "ENGINE_LIMITS", "check_number"]

#: test-time refinements (``engine.refine``): none, BRS, f-BRS
BRS_MODES = ("off", "brs", "fbrs")

#: numeric Predictor settings: name -> (type, lower bound, whether the bound is excluded). There
#: is no upper bound: zoom boxes are clipped to the image and the zoom's scale is at most
#: ``target_size`` over the box's side, so a large value is never more work than the whole image.
ENGINE_LIMITS: dict[str, tuple[type, float, bool]] = {
    "target_size": (int, 32, False), "first_window": (int, 32, False), "full_max_side": (int, 32, False),
    "min_crop_size": (int, 1, False), "expansion": (float, 1.0, False), "max_upscale": (float, 0.0, True),
    "click_radius": (float, 0.0, False), "brs_max_evals": (int, 1, False), "brs_time_cap": (float, 0.0, True),
}


def check_number(name: str, value: Any, kind: type, low: float, strict: bool = False) -> int | float:
    """``value`` cast to ``kind`` (int or float), or ValueError naming ``name``.

    A number is a finite real (numpy's too) that is not a bool; an int needs a whole
    value; it must be at least ``low`` (more than ``low`` when ``strict``).
    """
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (value > low if strict else value >= low) and (kind is float or value == int(value)))
    if not ok:
        what = "an integer" if kind is int else "a finite number"
        raise ValueError(f"{name} must be {what} {'>' if strict else '>='} {low:g}, got {value!r}")
    return kind(value)
