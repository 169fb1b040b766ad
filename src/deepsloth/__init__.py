"""deepsloth: slowdown attacks on input-adaptive multi-exit neural networks."""

__version__ = "0.1.0"

from .errors import DeepslothError

__all__ = ["__version__", "DeepslothError"]
