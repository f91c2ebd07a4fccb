"""The photo library: scanning, decoding, the catalog, the index lock, free space, the files."""
