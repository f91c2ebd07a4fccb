"""Descriptions as vectors and finding the nearest: embedder, vector store, keywords, calibration."""
