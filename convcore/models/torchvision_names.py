"""torchvision's state-dict keys <-> the zoo's, in both directions.

The zoo's networks follow torchvision's module names except where a
convcore container adds a level (key rules below); each rule is one
regular expression per direction, so the two directions cannot drift:

    torchvision                          convcore
    layer2.0.conv1.weight                layer2.0.body.conv1.weight
    layer2.0.downsample.0.weight         layer2.0.shortcut.0.weight
    aux1.…, aux2.… (GoogLeNet)           dropped, see below

VGG (features.N / classifier.N) and MobileNet-v2 (features.N.conv.…)
have torchvision's keys as they are. ResNet blocks are Residual
containers ("body", "shortcut") where torchvision writes the block's
layers and "downsample" directly.

GoogLeNet's auxiliary classifiers (aux1, aux2) only add training losses
in torchvision; the zoo's googlenet has none, so torchvision_keys() drops
every key under them (torchvision's own loader does the same when
aux_logits=False). `transform_input` is a constructor flag, not a key:
torchvision's pretrained GoogLeNet rescales ImageNet-normalised input
inside forward; give convcore's the input that transform produces.

The zoo's models try torchvision_keys() themselves when a state dict's
keys do not match (their load_state_dict key map), so
`model.load_state_dict(torch_state_dict)` works as it is.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Union

from convcore.nn import Module

# (torchvision pattern, convcore replacement, convcore pattern, torchvision
# replacement): one row per renamed level.
_RULES = (
    (r"^(layer\d+\.\d+)\.downsample\.", r"\1.shortcut.",
     r"^(layer\d+\.\d+)\.shortcut\.", r"\1.downsample."),
    (r"^(layer\d+\.\d+)\.(?!body\.|shortcut\.|downsample\.)", r"\1.body.",
     r"^(layer\d+\.\d+)\.body\.", r"\1."),
)
_TO_CONVCORE = [(re.compile(a), b) for a, b, _, _ in _RULES]
_TO_TORCHVISION = [(re.compile(c), d) for _, _, c, d in _RULES]

# torchvision keys with no counterpart in the zoo: GoogLeNet's auxiliary
# classifiers (training-only heads).
_DROPPED = re.compile(r"^aux[12]\.")


def _rename(key, rules):
    for pattern, replacement in rules:
        key = pattern.sub(replacement, key)
    return key


def torchvision_keys(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """A torchvision state dict (ResNet, VGG, MobileNet-v2, GoogLeNet) with
    the zoo's keys: "layer1.0.conv1.weight" -> "layer1.0.body.conv1.weight",
    "layer2.0.downsample.0.weight" -> "layer2.0.shortcut.0.weight", GoogLeNet's
    "aux1.…"/"aux2.…" dropped; other keys unchanged. Values are kept as
    given, in order (torch tensors load as they are)."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"torchvision_keys: expected a mapping key -> array, got "
                        f"{type(state_dict).__name__}")
    return OrderedDict((_rename(k, _TO_CONVCORE), v)
                       for k, v in state_dict.items() if not _DROPPED.match(k))


def to_torchvision_keys(model_or_state_dict: Union[Module, Mapping[str, Any]]
                        ) -> Dict[str, Any]:
    """The way back: a convcore model's state dict (or a state dict) with
    torchvision's keys, for torch's `load_state_dict` (wrap each array in
    `torch.from_numpy`). Values are kept as given (copies, for a model)."""
    state_dict: Mapping[str, Any]
    if isinstance(model_or_state_dict, Module):
        state_dict = model_or_state_dict.state_dict()
    elif hasattr(model_or_state_dict, "items"):
        state_dict = model_or_state_dict
    else:
        raise TypeError(f"to_torchvision_keys: expected a Module or a mapping key -> array, "
                        f"got {type(model_or_state_dict).__name__}")
    return OrderedDict((_rename(k, _TO_TORCHVISION), v)
                       for k, v in state_dict.items())
