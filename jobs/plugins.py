"""Import every module that registers plugins, so `mmkg ls` sees all registries."""
import contextlib
import importlib

PLUGIN_MODULES = [
    "mmkg.pipeline.readers",
    "mmkg.pipeline.engines",
    "mmkg.pipeline.encoders",
    "mmkg.retrieval.index",
    "mmkg.retrieval.datasets",
    "mmkg.retrieval.batch",
    "mmkg.retrieval.retrievers",
    "mmkg.model",
    "mmkg.model.rankers",
    "mmkg.model.reranker",
]

for _name in PLUGIN_MODULES:
    with contextlib.suppress(ImportError):
        importlib.import_module(_name)
