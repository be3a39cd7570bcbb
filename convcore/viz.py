"""Old path of convcore.training.viz, kept so that existing imports
(`from convcore import viz; viz.plot_history(...)`) still work."""
from convcore.training.viz import *  # noqa: F401,F403  (its __all__)
from convcore.training.viz import __all__  # noqa: F401
