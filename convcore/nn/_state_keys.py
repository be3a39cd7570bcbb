"""Matching a state dict's keys to a module's, for Module.load_state_dict:
a foreign naming tried through the module's key map, and a short message
when the keys still do not match."""

# Keys shown per list in an error: enough to see the pattern of a naming
# mismatch without printing a whole network's keys.
SHOWN = 3


def _diff(targets, state_dict):
    missing = [k for k in targets if k not in state_dict]
    unexpected = [k for k in state_dict if k not in targets]
    return missing, unexpected


def match_keys(module, targets, state_dict):
    """(state_dict, missing, unexpected): `state_dict` as given when its
    keys match `targets`; otherwise renamed by the module's
    state_dict_key_map when that makes them match exactly."""
    missing, unexpected = _diff(targets, state_dict)
    key_map = module.state_dict_key_map
    if (missing or unexpected) and key_map is not None:
        renamed = key_map(state_dict)
        if not any(_diff(targets, renamed)):
            return renamed, [], []
    return state_dict, missing, unexpected


def _some(keys):
    """"['a', 'b', 'c']", or the first SHOWN with "..." and the count."""
    if len(keys) <= SHOWN:
        return repr(list(keys))
    return "[" + ", ".join(map(repr, keys[:SHOWN])) + f", ...] ({len(keys)} in all)"


def mismatch_message(fn, missing, unexpected):
    """A few keys of each list, the counts, and what to do next."""
    parts = []
    if missing:
        parts.append(f"missing keys {_some(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_some(unexpected)}")
    return (f"{fn}: " + "; ".join(parts) + ". A torchvision state dict? "
            "convcore.models.torchvision_keys(state_dict) renames its keys "
            "(the zoo's models apply it themselves; torchvision's AlexNet and "
            "GoogLeNet are models.alexnet_torchvision and googlenet_torchvision); "
            "strict=False loads the matching keys and returns the full lists.")
