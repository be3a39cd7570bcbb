"""Old path of convcore.training.metrics, kept so that existing imports
(`from convcore.metrics import accuracy`) still work."""
from convcore.training.metrics import *  # noqa: F401,F403  (its __all__)
from convcore.training.metrics import __all__  # noqa: F401
