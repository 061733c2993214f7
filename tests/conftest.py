import os
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "..", "shared", "fixtures")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # pytest-benchmark, when installed, creates ./.benchmarks in the repository at every session;
    # tests write nothing into the repository tree, so its default storage goes to a temp dir.
    if getattr(config.option, "benchmark_storage", None) == "file://./.benchmarks":
        config.option.benchmark_storage = "file://" + tempfile.mkdtemp(prefix="ppcls-benchmarks-")


@pytest.fixture(scope="session")
def official_npz():
    """The official PyTorch MobileNeXt forward pass (../shared/fixtures); required, never skipped."""
    import numpy as np

    path = os.path.join(FIXTURES, "mobilenext_official_w1_0.npz")
    assert os.path.isfile(path), f"reference fixture missing: {path} (clone with ../shared beside it)"
    return np.load(path)
