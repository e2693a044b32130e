"""The command line: `runner VERB ...` (one module per verb group) and `runner OVERRIDES` (a run or a sweep)."""
