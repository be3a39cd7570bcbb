"""Floor 3: layers with explicit backward, containers, losses.

    Module ── forward(x) -> y      caches what backward needs (not under no_grad)
           └─ backward(gy) -> gx   adds into Parameter.grad, calls convcore.functional
    Sequential / Residual / Concat  route gradients: the network builder
    CrossEntropyLoss / MSELoss / BCEWithLogitsLoss   loss(out, t) -> float; backward() -> gout

A training step:  loss(model(x), t); model.backward(loss.backward());
optimizer.step(); optimizer.zero_grad().
"""
from convcore.nn._fusion import fusion_enabled, set_fusion
from convcore.nn.activation import LeakyReLU, ReLU, ReLU6, Sigmoid, Softplus, Tanh
from convcore.nn.containers import Concat, Residual, Sequential
from convcore.nn.conv import Conv2d
from convcore.nn.dropout import Dropout
from convcore.nn.linear import Flatten, Identity, Linear
from convcore.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from convcore.nn.module import Module
from convcore.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm,
                                       LocalResponseNorm)
from convcore.nn.parameter import Parameter
from convcore.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from convcore.nn.sync_batchnorm import SyncBatchNorm
# issue 16 item 3: layers users reach for
from convcore.nn.activation import GELU, LogSoftmax, SiLU, Softmax
from convcore.nn.conv_transpose import ConvTranspose2d
from convcore.nn.dropout import Dropout2d
from convcore.nn.pooling import AdaptiveMaxPool2d
from convcore.nn.loss import HuberLoss, L1Loss, NLLLoss, SmoothL1Loss
from convcore.nn.upsampling import Upsample

__all__ = [
    "Module", "Parameter", "Sequential", "Residual", "Concat",
    "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "LocalResponseNorm", "GroupNorm", "LayerNorm",
    "ReLU", "ReLU6", "LeakyReLU", "Sigmoid", "Tanh", "Softplus", "Dropout", "Flatten", "Identity",
    "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss", "set_fusion", "fusion_enabled",
]
__all__ += [
    "ConvTranspose2d", "AdaptiveMaxPool2d", "Dropout2d", "GELU", "SiLU", "Softmax", "LogSoftmax",
    "NLLLoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "Upsample",
]
