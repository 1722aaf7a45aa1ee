"""``python -m sparsegemm.bench [bench] [options]``: same as the ``sparsegemm bench`` command."""

import sys

from .cli import MODULE, main
from .environment import reexec_with_timing_env

arguments = sys.argv[1:]
reexec_with_timing_env([sys.executable, "-m", MODULE, *arguments])
if not arguments or arguments[0] != "bench":
    arguments = ["bench", *arguments]
raise SystemExit(main(arguments))
