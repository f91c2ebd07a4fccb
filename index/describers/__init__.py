"""Who writes a photo's description: the vision model, the offline describer, a sidecar file."""
