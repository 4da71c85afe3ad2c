"""diffsr: a registry-driven image-restoration toolbox with a diffusion prior as a loss (DiffLoss)."""

__version__ = "0.1.0"
