"""Every registered model variant has a test built on the generic template (PyKEEN K4 MetaTestCase)."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from mmkg.model import gnn_layer_registry, model_registry
from tests.model import cases


def _template_subclasses() -> list[type]:
    here = Path(__file__).parent
    for mod in pkgutil.iter_modules([str(here)]):
        if mod.name.startswith("test_"):
            importlib.import_module(f"tests.model.{mod.name}")
    seen, todo = [], list(cases.ModelTestCase.__subclasses__())
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return seen


def test_every_registered_model_has_a_template_test():
    tested = {cls.name for cls in _template_subclasses() if getattr(cls, "name", None)}
    missing = [name for name in model_registry.names() if name not in tested]
    assert not missing, f"model variants without a tests/model/cases.ModelTestCase subclass: {missing}"


def test_every_registered_class_documents_its_shapes():
    for registry in (model_registry, gnn_layer_registry):
        for name, cls in registry.items():
            assert cls.__doc__ and "Shapes:" in cls.__doc__, f"{registry.family} {name} lacks a Shapes: section"
            assert hasattr(cls, "reset_parameters"), f"{registry.family} {name} lacks reset_parameters()"
