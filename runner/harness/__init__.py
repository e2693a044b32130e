"""The in-run harness: what travels into a run (the built-in trainer, its spool, the shim). Standard library
and the run's own packages only: nothing of the host side."""
