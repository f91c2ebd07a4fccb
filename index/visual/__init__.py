"""Photos by what they look like: the visual embedder, its store and search."""
