"""The MMKG pipeline's one import namespace.

`mmkg.kg_store`, `mmkg.pipeline`, `mmkg.retrieval`, `mmkg.model` and `mmkg.jobs` are the
top-level folders of the repository (linked here), so a user's own `model.py` or `jobs/`
never shadows them. Layers, top to bottom: jobs → model → retrieval → pipeline → kg_store.
"""

__version__ = "0.1.0"
