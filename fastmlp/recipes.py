"""placeholder during build."""
