# For type checkers only. The kernel modules are compiled extensions (one
# .pyx each, beside this file) without stubs of their own: to a checker
# each of them, and everything in them, is Any. Checks of the arguments
# that reach them live, typed, in convcore.functional and convcore.utils.
from typing import Any

def __getattr__(name: str) -> Any: ...
