"""Pre-review: validation of a prefecture tree against the checklist."""
