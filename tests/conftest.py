"""Shared fixtures: the real data in ../shared/data, one Spark session per module, markers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMKG_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()

# Tests run on the CPU only (clip-retrieval C5); GPU tests opt in with the `gpu` marker, and a
# run that selects them (`pytest -m gpu`, `make gpu-check`) gets the GPUs back in pytest_configure.
_HIDES_GPUS = "CUDA_VISIBLE_DEVICES" not in os.environ
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.fail(f"real data not found at {DATA}; set MMKG_SHARED_DATA")
    return DATA


@pytest.fixture(scope="module")
def spark():
    """One local[2] session per test module (a session costs 5-10 s to start)."""
    from mmkg.pipeline.engines.spark import get_or_create_session
    session = get_or_create_session(master="local[2]", app_name="mmkg-tests", shuffle_partitions=2)
    yield session
    session.stop()


def pytest_configure(config):
    # before collection, so before anything initialises CUDA with the GPUs hidden
    expr = config.getoption("markexpr") or ""
    if _HIDES_GPUS and "gpu" in expr and "not gpu" not in expr:
        del os.environ["CUDA_VISIBLE_DEVICES"]


def pytest_collection_modifyitems(config, items):
    # Mark whole folders by what they start (PyG G4): spark tests carry the marker explicitly.
    for item in items:
        if "spark" in item.fixturenames:
            item.add_marker(pytest.mark.spark)
