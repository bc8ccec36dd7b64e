"""pipeline layer (see docs/ARCHITECTURE.md)."""
