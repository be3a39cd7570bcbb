"""Old path of convcore.algorithms.autotune, kept so that existing imports
(`from convcore import autotune`, `convcore.autotune.tune(...)`) work.

The module makes itself an alias rather than copying names: autotune holds
state (the in-memory cache) and tests and users patch its functions, so
both names must be one module object."""
import sys

from convcore.algorithms import autotune

sys.modules[__name__] = autotune
