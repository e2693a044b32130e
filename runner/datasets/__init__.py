"""Datasets: versions tracked with DVC, mounted read-only into runs.

Concepts: `data/` at the project root is tracked by the top-level `data.dvc`; a dataset is a folder in it; a
version is an annotated git tag `data/NAME/vN` on the commit whose `data.dvc` holds it (the tag's message carries
the version's message, checksum, file count and size). A version's checksum is the md5 DVC gives that folder
(`dvc add` of the folder alone reports the same). Files live in the DVC cache (`.dvc/cache`) and the default DVC
remote. A mount is materialised once per checksum under `.runner/datasets/MD5/` as hard links into the DVC cache,
read-only, and bind-mounted (Docker) or linked into the run directory (local).

One verb per module: `add`, `ls`, `importer`; `mount` resolves and materialises a run's `data=[...]`; `record`
writes what a run used to MLflow. Only `entry` is imported by the pure config code; DVC is imported lazily.
"""
