"""The Spark engine (mapInPandas, encoder loaded once per Python worker) on a small MarKG slice."""
from __future__ import annotations

import numpy as np
import pytest

from mmkg.kg_store import KGStore
from mmkg.kg_store.vectors import load_vectors
from mmkg.pipeline.embed import embed_store
from tests.stores import build_markg_store

pytestmark = pytest.mark.spark


def test_spark_engine_matches_local(spark, data_dir, tmp_path):
    local, distributed = tmp_path / "local", tmp_path / "spark"
    build_markg_store(data_dir, local)
    build_markg_store(data_dir, distributed)
    kw = dict(limit=60, chunk_size=16, batch_size=8, threads=1, progress=False)
    embed_store(local, "tiny-clip", **kw)
    res = embed_store(distributed, "tiny-clip", engine="spark", **kw)
    assert res.meta["engine"] == "spark" and res.meta["kinds"]["triple"]["count"] == 60
    assert res.forwarded >= 60 + 60  # distinct labels and triple texts (descriptions may repeat)
    for kind in ("entity", "relation", "triple"):
        a, ida = load_vectors(KGStore(local), "tiny-clip", kind)
        b, idb = load_vectors(KGStore(distributed), "tiny-clip", kind)
        assert np.array_equal(ida, idb) and np.allclose(a, b, atol=1e-6)
    assert spark.sparkContext._jsc is not None  # the test's session was reused, not stopped
