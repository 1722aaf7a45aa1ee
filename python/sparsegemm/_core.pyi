# Type stub for the compiled extension (csrc/bindings/): its functions and
# classes are typed loosely here; the Python layer validates every argument
# before it calls them.
from typing import Any

def __getattr__(name: str) -> Any: ...
