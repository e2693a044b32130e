"""runner: reproducible deep-learning runs from Hydra configs, recorded in MLflow.

Kept free of heavy imports: the in-run harness and ``--help`` import this package.
"""

__version__ = "0.1.0"
