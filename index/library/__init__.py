"""The photo library: scanning, decoding, the catalog, the index lock, the indexer."""
