"""Import every module that registers plugins, so `mmkg ls` sees all registries."""
import contextlib
import importlib

PLUGIN_MODULES = [
    "pipeline.readers",
    "pipeline.engines",
    "pipeline.encoders",
    "retrieval.index",
    "retrieval.datasets",
    "retrieval.batch",
    "retrieval.retrievers",
    "model",
    "model.rankers",
    "model.reranker",
]

for _name in PLUGIN_MODULES:
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)
