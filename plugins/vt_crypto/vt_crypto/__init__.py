"""vt plugin package."""
