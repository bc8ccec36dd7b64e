"""The `dataset` family: one module per dataset (MARS, ScienceQA, JSONL), each registering a
`Dataset` subclass (`mmkg.retrieval.datasets.base`). Adding a dataset is one module imported here plus
its case in `tests/retrieval/test_datasets.py`."""
from mmkg.retrieval.datasets.base import (Dataset, Query, QuerySet, build_queries, datasets, parse_dataset_spec,
                                     resolve_dataset)
from mmkg.retrieval.datasets import jsonl, mars, scienceqa  # noqa: F401  (registration)

__all__ = ["Dataset", "Query", "QuerySet", "build_queries", "datasets", "parse_dataset_spec", "resolve_dataset"]
