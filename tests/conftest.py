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


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """``bash scripts/quickstart.sh`` end to end (2 epochs, no pip installs) in a copy of the
    repository's scripts, tools, configs and deploy folders (it writes dataset/, output/ and
    inference/ beside them; the package comes from PYTHONPATH). Returns ``(root, stdout)``."""
    import shutil
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("quickstart")
    for name in ("scripts", "tools", "configs", "deploy", "benchmark"):
        shutil.copytree(os.path.join(ROOT, name), root / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.jpg"))
    shutil.copy(os.path.join(ROOT, "requirements.txt"), root)
    env = dict(os.environ, PYTHON=sys.executable, QUICKSTART_EPOCHS="2", QUICKSTART_SKIP_INSTALL="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(["bash", str(root / "scripts" / "quickstart.sh")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, proc.stdout
