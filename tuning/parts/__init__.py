"""Parts that compose with any method: the task head, layer-wise learning rates, gradual unfreezing."""
