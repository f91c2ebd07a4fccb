"""Indexing: the run that drives every wing (scan, describe, embed, visual) over the library."""
