"""Config files are the saved keyword arguments of a job (PyKEEN K3).

A YAML file has a free-form `metadata` block and a `job` block that is passed straight into the
job's function (`run_pipeline`, `train`, `evaluate`). Errors are one line.

Every YAML the tools read (configs, the ingest config, `--set` values) goes through `load_yaml`
(issue 32): a bounded read of a regular file, and no anchors/aliases. Aliases let a 649-byte file
expand to gigabytes once the config is hashed or printed (the "billion laughs"); configs here
never need them, so they are refused in one line rather than bounded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmkg.kg_store.errors import ConfigError

#: a config larger than this is refused before it is read (the shipped ones are a few KB)
MAX_CONFIG_BYTES = 1 << 20


def load_yaml(text: str, what: str) -> Any:
    """`yaml.safe_load` of `text` with aliases (and so merge keys) refused: one `ConfigError` line."""
    import yaml

    class _NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise ConfigError(f"{what}: YAML aliases (*{self.peek_event().anchor}) are not allowed "
                                  f"(line {mark.line + 1}); write the value out")
            return super().compose_node(parent, index)

    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{what}: not valid YAML ({' '.join(str(e).split())})") from None


def read_yaml_file(path: str | Path, what: str) -> Any:
    """A YAML file read as `load_yaml` does, after a bounded read of a regular file."""
    from mmkg.kg_store.safe_io import UnsafeFileError, read_bounded
    try:
        data = read_bounded(path, MAX_CONFIG_BYTES)
    except UnsafeFileError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.detail}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"cannot read {what} {path}: not UTF-8 ({e})") from None
    return load_yaml(text, f"{what} {path}")


def read_config(path: str | Path, kind: str = "config") -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, job) of a config YAML."""
    doc = read_yaml_file(path, kind)
    if not isinstance(doc, dict) or not isinstance(doc.get("job"), dict) or "metadata" not in doc:
        raise ConfigError(f"{path}: a {kind} needs a `metadata` block and a `job` mapping")
    return doc["metadata"], doc["job"]
