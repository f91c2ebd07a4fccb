"""The `peitu` command line."""
