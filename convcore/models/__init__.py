"""convcore.models: the seeds' networks built from nn containers (floor 4).

    lenet5, lenet_digits     Sequential                      lenet.py
    alexnet                  Sequential(features, classifier) alexnet.py
    alexnet_torchvision      torchvision's variant (64-192-384-256-256, no LRN)
    vgg11 .. vgg19 (+ _bn),  configurations A, A-LRN, B, C, D, E   vgg.py
    googlenet, inception     Concat of four branches         googlenet.py
    googlenet_torchvision    torchvision's variant (conv + BN, branch1..4)
    resnet18/34/50, resnet20 Residual blocks (+ ReLU)        resnet.py
    mobilenet_v1             depthwise-separable blocks      mobilenet.py
    mobilenet_v2             inverted residuals (torchvision's names)
    torchvision_keys, to_torchvision_keys   torchvision's state-dict keys
                             <-> the zoo's          torchvision_names.py

Every builder takes num_classes, in_channels and input_size (int or (h, w)),
`rng` (Generator or int seed: one seed fixes every initial weight) and
`dtype`. get_model(name, **kwargs) looks a builder up by name (the CLI's
--model). Build inside `convcore.init.skip_init()` to skip drawing weights
that load_state_dict() will overwrite.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from convcore.nn import Sequential
from convcore.models.alexnet import alexnet, alexnet_torchvision
from convcore.models.googlenet import (INCEPTION_TABLE, TransformInput, googlenet,
                                       googlenet_torchvision, inception, inception_torchvision)
from convcore.models.lenet import lenet5, lenet_digits
from convcore.models.mobilenet import (InvertedResidual, depthwise_separable, inverted_residual,
                                       mobilenet_v1, mobilenet_v2)
from convcore.models.resnet import (PadShortcut, basic_block, bottleneck_block, resnet,
                                    resnet18, resnet20, resnet34, resnet50, resnet_cifar)
from convcore.models.torchvision_names import to_torchvision_keys, torchvision_keys
from convcore.models.vgg import (CONFIGS as VGG_CONFIGS, vgg, vgg11, vgg11_bn, vgg11_lrn, vgg13,
                                 vgg13_bn, vgg16, vgg16_bn, vgg16_c, vgg16_c_bn, vgg19, vgg19_bn)

MODELS: Dict[str, Callable[..., Sequential]] = {f.__name__: f for f in (
    lenet5, lenet_digits, alexnet, vgg11, vgg11_bn, vgg11_lrn, vgg13, vgg13_bn, vgg16_c, vgg16_c_bn,
    vgg16, vgg16_bn, vgg19, vgg19_bn, googlenet, resnet18, resnet34, resnet50, resnet20,
    mobilenet_v1, mobilenet_v2, alexnet_torchvision, googlenet_torchvision)}


def get_model(name: str, **kwargs: Any) -> Sequential:
    """Build the model called `name` (a key of MODELS) with builder kwargs."""
    if name not in MODELS:
        raise ValueError(f"get_model: unknown model {name!r}; choose from "
                         f"{', '.join(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "get_model", "lenet5", "lenet_digits", "alexnet", "vgg", "VGG_CONFIGS",
           "vgg11", "vgg11_bn", "vgg11_lrn", "vgg13", "vgg13_bn", "vgg16_c", "vgg16_c_bn", "vgg16",
           "vgg16_bn", "vgg19", "vgg19_bn", "googlenet", "inception", "INCEPTION_TABLE",
           "resnet", "resnet18", "resnet34", "resnet50", "resnet_cifar", "resnet20",
           "basic_block", "bottleneck_block", "PadShortcut", "torchvision_keys",
           "to_torchvision_keys", "alexnet_torchvision", "googlenet_torchvision",
           "inception_torchvision", "TransformInput",
           "mobilenet_v1", "mobilenet_v2", "depthwise_separable", "inverted_residual",
           "InvertedResidual"]
