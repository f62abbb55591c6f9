"""Self-supervised training: backbones, heads, losses, methods, the training loop."""
