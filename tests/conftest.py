"""Shared test fixtures. Keep this file small: fixtures used by one module live there.

Provides:
    rng: a seeded ``numpy.random.Generator`` (seed 0), fresh per test.
    one_torch_thread: runs a test module's torch work on one thread (a loaded 2-core machine
        runs small convolutions ~50x slower with two); modules opt in with ``usefixtures``.
    shared_data: ``Path`` of the shared data folder (``../shared/data`` beside the repository,
        or ``$NAPARI_CLICKSEG_SHARED_DATA``); skips when missing, fails under ``CI=true``.
    tiny_weights: a small ``early`` weights file (random, marked trained) for plumbing tests.
    load_script: imports a file of ``scripts/`` by name (``load_script("click_response")``).
    Hypothesis profiles ``dev`` (default) and ``ci`` (chosen when ``CI`` is set): no deadline
    (first calls into torch/scipy are slow), derandomized on CI so runs are reproducible.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parents[1]

settings.register_profile(
    "dev", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=50
)
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=50,
    derandomize=True,
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator (seed 0)."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (DSB2018, PH2, COCO-MVal, GrabCut); see shared/data/README.md."""
    env = os.environ.get("NAPARI_CLICKSEG_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        msg = f"shared data folder not found: {path}"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must have ../shared beside the repository)")
        pytest.skip(msg)
    return path


@pytest.fixture
def load_script():
    """A function that imports ``scripts/<name>.py`` as a module."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module's tests; the previous count is restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A small ``early`` weights file (random weights, marked trained: for plumbing tests only)."""
    import torch

    from napari_clickseg.models import create_model
    from napari_clickseg.weights import save_weights

    torch.manual_seed(0)
    f = tmp_path_factory.mktemp("tiny-weights") / "w.safetensors"
    save_weights(create_model("early", decoder_width=8), f, trained=True)
    return f
