"""retrieval layer (see docs/ARCHITECTURE.md)."""
