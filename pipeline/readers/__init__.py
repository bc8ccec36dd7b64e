"""Source readers, one module per format, registered in the `reader` family.

`mmkg ingest --source FORMAT:PATH`: FORMAT is a name of `reader_registry` (see `mmkg ls`).
"""
from mmkg.pipeline.readers.base import InputFile, Reader, SourceSpec, parse_source, reader_registry
from mmkg.pipeline.readers import images, markg, mmkg, openke, rdf, tsv  # noqa: F401  (registration)

__all__ = ["InputFile", "Reader", "SourceSpec", "parse_source", "reader_registry"]
