"""Errors that the CLI turns into one clear line (never a traceback)."""


class KGStoreError(Exception):
    """A user-facing problem with a KG directory."""


class CorruptFileError(KGStoreError):
    """A committed file does not match its manifest checksum or cannot be parsed."""

    def __init__(self, path, detail: str):
        super().__init__(f"corrupt or modified file {path}: {detail}")
        self.path = path


class LockedError(KGStoreError):
    """Another writer holds the KG directory lock."""
