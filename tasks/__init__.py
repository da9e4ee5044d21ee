"""Task plugins shipped with lrl-harness."""
