"""Config to run spec: Hydra composition, the typed schema, validation, and the frozen RunSpec."""
