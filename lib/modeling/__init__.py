"""The seed and device, data-parallel groups, the training loop, metrics and losses."""
