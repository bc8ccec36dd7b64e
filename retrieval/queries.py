"""Query building entry points: `NAME:PATH` → a registered dataset (`mmkg.retrieval.datasets`) →
`Query` objects. Kept for the callers of `build_queries` / `parse_dataset_spec` and the names
that moved into the dataset modules."""
from __future__ import annotations

from mmkg.retrieval.datasets import Query, QuerySet, build_queries, datasets, parse_dataset_spec, resolve_dataset
from mmkg.retrieval.datasets.base import EntityLabels, entity_image, store_images
from mmkg.retrieval.datasets.jsonl import JsonlDataset
from mmkg.retrieval.datasets.mars import (MARS_CANDIDATES, MARS_FIELD_TYPES, MARS_MODES, MARS_SLOTS, mars_image_slots,
                                     mars_model_image_slot, mars_queries)
from mmkg.retrieval.datasets.scienceqa import SCIENCEQA_FIELD_TYPES, scienceqa_text

__all__ = ["Query", "QuerySet", "build_queries", "datasets", "parse_dataset_spec", "resolve_dataset", "EntityLabels",
           "entity_image", "store_images", "JsonlDataset", "MARS_CANDIDATES", "MARS_FIELD_TYPES", "MARS_MODES",
           "MARS_SLOTS", "mars_image_slots", "mars_model_image_slot", "mars_queries", "SCIENCEQA_FIELD_TYPES",
           "scienceqa_text"]
