"""`python -m tensortap ...`: the same as the `tensortap` command."""
import sys

from .cli import main

sys.exit(main())
