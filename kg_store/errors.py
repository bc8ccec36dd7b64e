"""Errors that the CLI turns into one clear line (never a traceback), by kind:

* `KGStoreError`: a problem with a KG directory (missing, corrupt, locked, stale) → exit 1;
* `ConfigError`: a configuration or usage error (unknown name, bad option value) → exit 2;
* `DeviceError`: a runtime/device problem (CUDA requested but absent, out of memory) → exit 1;
* a missing optional dependency is an `ImportError` whose message carries the install hint.
"""


class MMKGError(Exception):
    """Base of every error the CLI reports as one line."""


class KGStoreError(MMKGError):
    """A user-facing problem with a KG directory."""


class ConfigError(MMKGError):
    """A configuration or usage error: the request itself is wrong (CLI exit code 2)."""


class UnknownNameError(ConfigError, ValueError):
    """A name no registry holds (`Registry.get`); a ValueError too, for callers that catch that."""


class DeviceError(MMKGError):
    """The run cannot use the device it was asked to use."""


class CorruptFileError(KGStoreError):
    """A committed file does not match its manifest checksum or cannot be parsed."""

    def __init__(self, path, detail: str):
        super().__init__(f"corrupt or modified file {path}: {detail}")
        self.path = path


class LockedError(KGStoreError):
    """Another writer holds the KG directory lock."""


class NotAStoreError(KGStoreError, ConfigError):
    """A writer was asked to create a store in a non-empty directory that is not one: a usage
    error (exit 2); `--force` creates the store there anyway."""
