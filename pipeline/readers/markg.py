"""`markg:DIR` — MarKG (zjunlp/MKG_Analogy): entity/relation texts and `wiki_tuple_ids.txt`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from mmkg.kg_store.errors import KGStoreError
from mmkg.pipeline.readers import records as R
from mmkg.pipeline.readers.base import InputFile, Reader, reader_registry, require_dir, source_file
from mmkg.pipeline.readers.columns import key_text, three_columns

#: file name → role, in the order they are read (labels first so MarKG entity ids follow entity2text)
FILES = {
    "entity2text.txt": "entity_label",
    "entity2textlong.txt": "entity_description",
    "relation2text.txt": "relation_label",
    "relation2textlong.txt": "relation_description",
    "wiki_tuple_ids.txt": "triples",
}
_TEXT_ROLES = {
    "entity_label": (R.ENTITY, "label"), "entity_description": (R.ENTITY, "description"),
    "relation_label": (R.RELATION, "label"), "relation_description": (R.RELATION, "description"),
}


@reader_registry.register("markg")
class MarKGReader(Reader):
    """MarKG directory (the `MarKG/` folder or its parent)."""

    name = "markg"

    def plan(self, path: Path, options: dict[str, str]) -> list[InputFile]:
        root = require_dir(self.name, path)
        if not (root / "wiki_tuple_ids.txt").exists() and (root / "MarKG").is_dir():
            root = root / "MarKG"
        if not (root / "wiki_tuple_ids.txt").exists():
            raise KGStoreError(f"markg: no wiki_tuple_ids.txt in {path} (expected {', '.join(FILES)})")
        return [InputFile(source_file(self.name, root / f, root), role) for f, role in FILES.items()
                if (root / f).exists() or (root / f).is_symlink()]

    def parse(self, batch: pa.RecordBatch, role: str, ctx: dict[str, Any]) -> pa.RecordBatch:
        if role in _TEXT_ROLES:
            kind, p = _TEXT_ROLES[role]
            return key_text(batch, kind, p)
        good, s, p, o, rej = three_columns(batch)
        return R.concat([R.make(R.TRIPLE, good.num_rows, s=s, p=p, o=o, line_no=good["line_no"]), rej])
