"""Generic JSONL queries: one JSON object a line, {"id", "text", "image"?, "entities"?}."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.unsafe_text import UNSAFE_CHARS
from mmkg.retrieval.datasets.base import Dataset, Query, QuerySet, datasets
from mmkg.retrieval.query_rejects import BadRecord, numbered_lines, query_image, reject


@datasets.register("jsonl")
class JsonlDataset(Dataset):
    """A file of queries (no splits: the file is one, named by its stem); an image path is
    relative to the file or absolute."""

    name = "jsonl"
    field_types = {"image_path": pa.string()}

    def _file(self) -> Path:
        if self.path.is_dir():
            raise KGStoreError(f"jsonl: {self.path} is a directory, give the file")
        return self.path

    def defining_files(self, split: str | None) -> list[Path]:
        # the file and every image file a line names (a changed image changes that query)
        file = self._file()
        images = set()
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                image = json.loads(line).get("image")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(image, str) and image and (p := file.parent / image).is_file():
                images.add(p)
        return sorted({file, *images})

    def digest(self, split: str | None) -> str:
        from mmkg.kg_store.hashing import cache_key, file_sha256_memo
        # images may lie anywhere (absolute paths): named by their resolved path, not relative
        file = self._file()
        named = {f.name if f == file else str(f.resolve()): file_sha256_memo(f) for f in self.defining_files(split)}
        return cache_key({"dataset": self.name, "files": dict(sorted(named.items()))})

    def queries(self, *, store: KGStore | None = None, split: str | None = None,
                with_images: bool = False) -> QuerySet:
        path = self._file()
        queries: list[Query] = []
        rejects: list[dict[str, Any]] = []
        for n, _, line in numbered_lines(path, rejects):
            try:
                obj = json.loads(line)
                qid, text = str(obj["id"]), str(obj["text"])
            except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
                rejects.append(reject(path, n, line, f"not a {{'id','text',...}} JSON object ({type(e).__name__}: {e})"))
                continue
            if not qid or UNSAFE_CHARS.search(qid):  # an id names shard rows, predictions and terminal lines
                rejects.append(reject(path, n, line, "query id is empty or holds control characters"))
                continue
            try:
                image_path = (str(Path(query_image(path.parent, obj["image"], allow_absolute=True)).resolve())
                              if obj.get("image") else None)
            except BadRecord as e:
                rejects.append(reject(path, n, line, str(e)))
                continue
            queries.append(Query(query_id=qid, text=text,
                                 image_paths=[image_path] if with_images and image_path else [],
                                 entity_keys=[str(e) for e in obj.get("entities") or []],
                                 fields={"image_path": image_path}))
        return QuerySet(self.name, split or path.stem, queries, [path], dict(self.field_types), rejects)
