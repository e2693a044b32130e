"""`backend=slurm`: where and how a run's job is submitted. CPUs, memory and GPUs come from `resources.*`,
as for every backend (`--cpus-per-task`, `--mem`, `--gres=gpu:N`), so one config runs anywhere."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SlurmConfig:
    name: str = "slurm"
    partition: str | None = None  # null: the cluster's default partition
    time: str | None = (
        None  # SLURM's time limit ("30", "2:00:00", "1-00:00:00"); null: from resources.timeout
    )
    account: str | None = None
    qos: str | None = None
    sbatch_options: list[str] = field(default_factory=list)  # more sbatch options, e.g. ["--constraint=a100"]
    engine: str = "docker"  # the nodes' container engine: docker, or podman where users have no Docker daemon
    network: str = "host"  # as cluster container runtimes do: the node's network (the team's tracking server)
    # How a node gets the run's environment: `folder`, its folder in the runner's env store (RUNNER_CACHE, which
    # every node must then mount at the same path), beside the small harness image's archive; `archive`, an image
    # holding it, saved to the image cache (for clusters whose nodes share no such folder: one archive per env).
    envs: str = "folder"
    image_cache: str | None = (
        None  # a folder every node reads (shared filesystem); null: ~/.cache/runner/image-archives
    )
    keep_container: bool = False


CONFIG = SlurmConfig
