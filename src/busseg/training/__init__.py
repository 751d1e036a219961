"""Training: the loop, its configuration, checkpoints and the methods (supervised and semi-supervised)."""
