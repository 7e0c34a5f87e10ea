"""Detection adapter of nat-toolkit (filled in by its own issue)."""
