"""Optimisers, gradient clipping and learning-rate schedules (floor 3).

Updates are whole-array NumPy operations in place on Parameter.data;
frozen parameters and parameters without a gradient are skipped."""
from convcore.optim import lr_scheduler
from convcore.optim.adam import Adam, AdamW
from convcore.optim.clip import clip_grad_norm_, clip_grad_value_
from convcore.optim.optimizer import Optimizer
from convcore.optim.rmsprop import RMSprop
from convcore.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "clip_grad_norm_",
           "clip_grad_value_", "lr_scheduler"]
