"""Episode datasets."""
