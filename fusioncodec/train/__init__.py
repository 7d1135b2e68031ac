"""Training: edge-mask targets, datasets, losses and the loop."""
