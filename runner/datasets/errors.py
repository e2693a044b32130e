"""Dataset errors: each says what was received, what exists, and what to do next."""

from __future__ import annotations

from runner.errors import RunnerError


class DatasetError(RunnerError):
    pass


class UnknownDataset(DatasetError):
    def __init__(self, name: str, known: list[str]):
        from runner.errors import suggest

        avail = ", ".join(known) or "(none yet: runner data add NAME PATH, or runner data import mnist)"
        super().__init__(f"Unknown dataset '{name}'.{suggest(name, known)} Datasets: {avail}.")


class UnknownVersion(DatasetError):
    def __init__(self, name: str, version: str, known: list[int]):
        avail = ", ".join(f"{name}@{v}" for v in known) or "(none)"
        super().__init__(
            f"Dataset '{name}' has no version '{version}'. Versions: {avail} (or latest, or a git rev)."
        )


class DataMissing(DatasetError):
    def __init__(self, what: str, remote: str | None):
        where = f"the DVC remote '{remote}'" if remote else "any DVC remote (none is configured)"
        super().__init__(
            f"{what}: not in the local DVC cache, and fetching it from {where} failed. Push it from a copy "
            "that has it (dvc push), or point DVC at the remote that holds it (dvc remote add -d NAME URL)."
        )


class ChecksumMismatch(DatasetError):
    pass
