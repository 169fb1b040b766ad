"""Training loops for CNNs, IC-only SDNs and jointly trained SDNs."""
from .recipes import Recipe, default_recipe
from .loop import train_model

__all__ = ["Recipe", "default_recipe", "train_model"]
