"""Storage: the one path for bytes (atomic, versioned, encrypted at rest)."""
