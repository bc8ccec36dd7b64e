"""The GPU tier reuses the CPU tier's fixtures: the real shards, store and KG text of the model
tests (`tests/model/conftest.py`, built by `tests/retrieval/shards_fixture.py`)."""
from tests.model.conftest import graph_info, kg_text, mars_graphs, mars_items, real_shards, store  # noqa: F401
