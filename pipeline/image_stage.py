"""Images of an ingest: decode under limits (mmkg.pipeline.images), store blobs, build image rows.

Each distinct file is processed once (a thread pool: decoding is in C and releases the GIL);
a file mapped to two entities gives two rows and one blob. A row whose (entity, image sha256)
is already in the store or earlier in this run is an exact duplicate: counted, not stored.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa


@dataclass
class ImageResult:
    rows: pa.Table                      # images schema without id
    rejects: list[dict]                 # rejects rows (stage, source, location, reason, raw)
    blobs: list[str]                    # relative paths of the blobs written
    line_outcome: dict[int, str] = field(default_factory=dict)  # pos → accepted|duplicate|rejected


class ImagePrefetch:
    """Decode the images a plan names in background threads while the engine parses the text inputs.

    Keyed by (root, relative path) exactly as the IMAGE records name them; anything not prefetched
    (or prefetched with other limits) is processed on demand.
    """

    def __init__(self, files: list[tuple[str, str]], *, limits=None, threads: int = 4):
        from mmkg.pipeline.images import ImageLimits, process_image_file
        self.limits = limits or ImageLimits()
        self._pool = ThreadPoolExecutor(threads)
        self._futures = {f: self._pool.submit(process_image_file, f[1], root=f[0], limits=self.limits)
                         for f in dict.fromkeys(files)}

    def get(self, root: str, rel: str):
        from mmkg.pipeline.images import process_image_file
        fut = self._futures.get((root, rel))
        return fut.result() if fut is not None else process_image_file(rel, root=root, limits=self.limits)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def run_image_stage(records: pa.Table, entity_ids: list[int], *, store_root: Path, names: list[str],
                    file_paths: list[str], existing_pairs: set[tuple[int, str]], prefetch: ImagePrefetch
                    ) -> ImageResult:
    """records: IMAGE records (s, p=source uri, o=relative path, dt=root, src, file_seq, line_no, pos)."""
    from mmkg.pipeline.images import write_blob

    rels, roots = records["o"].to_pylist(), records["dt"].to_pylist()
    file_seq, line_no = records["file_seq"].to_pylist(), records["line_no"].to_pylist()
    outcomes = {f: prefetch.get(*f) for f in dict.fromkeys(zip(roots, rels))}
    blobs: dict[str, str] = {}
    rows = {k: [] for k in ("entity_id", "sha256", "width", "height", "format", "blob", "source_uri", "source")}
    rejects, seen, outcome_of_line = [], set(existing_pairs), {}
    for i, (rel, root) in enumerate(zip(rels, roots)):
        o = outcomes[(root, rel)]
        src, pos = records["src"][i].as_py(), records["pos"][i].as_py()
        primary = records["primary"][i].as_py()
        if not o.ok:
            if primary:
                rejects.append({"stage": "ingest", "source": names[src],
                                "location": f"{file_paths[file_seq[i]]}:{line_no[i]}",
                                "reason": f"image {o.reject_reason}", "raw": rel.encode()})
                outcome_of_line[pos] = "rejected"
            continue
        if o.sha256 not in blobs:
            blobs[o.sha256] = write_blob(store_root, o.sha256, o.data)
        pair = (entity_ids[i], o.sha256)
        if pair in seen:
            outcome_of_line.setdefault(pos, "duplicate")
            continue
        seen.add(pair)
        outcome_of_line[pos] = "accepted"
        for k, v in zip(rows, (entity_ids[i], o.sha256, o.width, o.height, o.format, blobs[o.sha256],
                               records["p"][i].as_py(), names[src])):
            rows[k].append(v)
    table = pa.table({k: pa.array(v, pa.int32() if k in ("width", "height") else
                                  pa.int64() if k == "entity_id" else pa.string()) for k, v in rows.items()})
    return ImageResult(rows=table, rejects=rejects, blobs=sorted(set(blobs.values())), line_outcome=outcome_of_line)
