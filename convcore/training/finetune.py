"""Transfer learning helpers: freeze layers, replace the classifier head.

A typical fine-tune of an imported network (README: "Fine-tuning a
PyTorch model"):

    model = models.resnet18(num_classes=1000)
    model.load_state_dict(torch_state_dict)           # torchvision's keys map
    head = replace_head(model, num_classes=10)        # new Linear, trainable
    freeze(model); unfreeze(model, head)              # train the head only
    opt = optim.SGD(trainable_parameters(model), lr=0.01, momentum=0.9)

The zoo's networks start with a first layer, so their backward stops at
the first layer that still trains (convcore.nn.containers): the frozen
backbone runs forward only.
"""
from __future__ import annotations

from typing import List, Tuple

from convcore.nn import Linear, Module, Parameter
from convcore.utils.types import Seed


def _matches(name, prefixes):
    return not prefixes or any(name == p or name.startswith(p + ".") for p in prefixes)


def _set_requires_grad(model, names, flag):
    names = tuple(names)
    known = {n for n, _ in model.named_modules()} | {n for n, _ in model.named_parameters()}
    for n in names:
        if not isinstance(n, str) or (n not in known and not any(k.startswith(n + ".")
                                                                 for k in known)):
            raise ValueError(f"{'unfreeze' if flag else 'freeze'}: no module or parameter "
                             f"named {n!r} in {type(model).__name__}")
    count = 0
    for name, p in model.named_parameters():
        if _matches(name, names):
            p.requires_grad = flag
            if not flag:
                p.grad = None
            count += 1
    return count


def freeze(model: Module, *names: str) -> int:
    """Stop training the parameters under the given qualified module or
    parameter names ("features", "layer1.0", "fc.bias"), or all of them when
    no name is given. Frozen parameters get no gradient (none is computed;
    .grad stays None) and optimizers skip them; batch-norm running statistics still update in train mode (as in
    torch: call .eval() on those modules to fix them too). Returns the
    number of parameters frozen."""
    return _set_requires_grad(model, names, False)


def unfreeze(model: Module, *names: str) -> int:
    """Undo freeze() for the given names (all when none); returns the count."""
    return _set_requires_grad(model, names, True)


def trainable_parameters(model: Module) -> List[Parameter]:
    """The parameters an optimizer should update (requires_grad True)."""
    return [p for p in model.parameters() if p.requires_grad]


def find_head(model: Module) -> Tuple[Module, str, str]:
    """(parent module, child name, qualified name) of the last Linear layer
    in registration order: the classifier head of every convcore model."""
    found = None
    for qname, m in model.named_modules():
        for cname, child in m.named_children():
            if isinstance(child, Linear):
                found = (m, cname, f"{qname}.{cname}" if qname else cname)
    if found is None:
        raise ValueError(f"find_head: {type(model).__name__} has no Linear layer to replace")
    return found


def replace_head(model: Module, num_classes: int, *, rng: Seed = None) -> str:
    """Swap the last Linear layer for a fresh, trainable Linear(in_features,
    num_classes) of the same dtype and bias setting; returns its qualified
    name (e.g. "fc", "classifier.6") so it can be unfrozen or given its own
    learning rate."""
    parent, cname, qname = find_head(model)
    old = parent._modules[cname]
    new = Linear(old.in_features, num_classes, bias=old.bias is not None,
                 dtype=old.weight.dtype.type, rng=rng)
    new.training = old.training
    # Replacing the entry keeps the parent's child order (and Sequential indices).
    Module.add_module(parent, cname, new)
    return qname
