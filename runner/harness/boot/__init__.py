"""Put first on a run's PYTHONPATH: its sitecustomize (never imported as part of this package)."""
