"""Old path of convcore.training.checkpoint, kept so that existing imports
(`from convcore.checkpoint import save_checkpoint`) still work."""
from convcore.training.checkpoint import load_checkpoint, random_layers, save_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint", "random_layers"]
