"""model layer (see docs/ARCHITECTURE.md): MR-MKG and the seed variants; training, inference, evaluation.

Importing the package registers the `model`, `backbone`, `gnn_layer` and `task` families.
"""
import importlib

from mmkg.model.backbones import backbone_registry, load_backbone
from mmkg.model.base import MultimodalKGModel, model_registry, resolve_model
from mmkg.model.gnn import gnn_layer_registry
from mmkg.model.mrmkg import MRMKG
from mmkg.model.tasks import task_registry

# Every variant module registers itself on import, so `resolve_model(name)` (train/evaluate,
# checkpoints) finds all of them. A new variant adds its module here.
VARIANT_MODULES = ("mmkg.model.mrmkg", "mmkg.model.kamt", "mmkg.model.simignore", "mmkg.model.mks2")
for _name in VARIANT_MODULES:
    importlib.import_module(_name)

__all__ = ["MRMKG", "MultimodalKGModel", "backbone_registry", "gnn_layer_registry", "load_backbone",
           "model_registry", "resolve_model", "task_registry"]
