"""The Docker backend: each run in a fresh container; its environment built once and cached by content.

Concepts: an environment is a folder of the env store (runner.backends.docker.envstore), named by a content hash
of (base image id, lock, the runner's build pieces): a venv whose files are hard links into one uv cache, built
once in a container of the base image, mounted read-only at /opt/env. The run's image is the base image with the
runner's in-run packages (`runner-harness:<hash>`), shared by every environment of that base. Where a run needs an
image of its own (env.setup commands change the environment; a session adds JupyterLab; a cluster whose nodes
share no folder loads an archive), the folder is copied into one, tagged `runner-env:<hash>`.
A run is a container labelled with its MLflow run id: its own copy of the code snapshot at /code (the working
directory: what the run writes there is kept), /output a bind mount, the harness at /opt/runner (read-only), each
dataset at its mount point (read-only), as the invoking user's UID/GID."""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import functools
import json
import os
import shlex
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.backends.base import Log, Plan, Prepared, RunHandle
from runner.backends.docker import envstore
from runner.backends.host import HostBackend
from runner.backends.logpump import LogPump
from runner.compose.spec import RunSpec
from runner.environment import harness
from runner.environment.lock import (
    Target,
    cache_dir,
    content_hash,
    uv_bin,
    uv_index_env,
    uv_version,
    write_whole,
)
from runner.errors import BackendUnavailable, ConfigError, EnvBuildError, RunnerError
from runner.harness.shim import Scrubber, secret_values
from runner.runs import space
from runner.runs.rundir import FAILED, FINISHED, Outcome, RunDir

ENV_REPO = "runner-env"
HARNESS_REPO = "runner-harness"  # the base image with the runner's in-run packages: env images build on it
# Labels. Images and containers use different keys because a container inherits its image's labels: a
# container someone else creates from a runner image must never look like one the runner made.
IMAGE_KIND = "runner.image.kind"  # on images: base | env
CONTAINER_KIND = "runner.container.kind"  # on containers the runner creates: run | build
RUN_LABEL = "runner.run_id"
KEEP_LABEL = "runner.keep"  # backend.keep_container: the container stays after the run
LEGACY_KIND = "runner.managed"  # one key for both, before the split: still recognised, never written
CA_PATH = "/etc/runner/ca.pem"
SPOOL_PATH = "/var/spool/runner"  # the harness's records, for the owner (runner.harness.spool)
ENGINE_LEAVES = 3.0  # seconds an engine may take to go after stopping a run's container as it shuts down
CHECKPOINT_PATH = "/checkpoint"  # the run's checkpoints, kept across its attempts (RunDir.checkpoint)
HOST_ALIAS = "host.docker.internal"
SECRETS_PATH = "/run/runner/secrets.env"
# Bump when what goes into an env image changes (the script below): old images are then not reused.
IN_IMAGE_VERSION = "3"
COPY_SCRIPT = """set -eu
mkdir -p /opt/env
cp -a /env/. /opt/env/
"""
HARNESS_SCRIPT = f"""set -eu
uv pip install --quiet --python /usr/bin/python3 --target {harness.SITE_IN_CONTAINER} --no-deps -r /build/harness.lock
"""
# JupyterLab on top of an env image (mode=jupyter): the env's packages stay at their locked versions.
JUPYTER_SCRIPT = """set -eu
uv pip install --python /opt/env/bin/python --constraint /build/requirements.lock -r /build/jupyter.txt
mkdir -p /opt/env/share/jupyter/lab/settings
cat > /opt/env/share/jupyter/lab/settings/overrides.json <<'EOF'
{"@jupyterlab/apputils-extension:notification": {"checkForUpdates": false, "fetchNews": "false"}}
EOF
uv pip freeze --python /opt/env/bin/python > /opt/env/session-packages.txt
"""
SESSION_PACKAGES = "/opt/env/session-packages.txt"  # what a session's image holds: its record's package list
IMAGE_PATH = "/opt/env/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


_CLIENT_LOCK = threading.Lock()


@contextlib.contextmanager
def _building(tag: str) -> Any:
    """Held while image `tag` is looked up or built: parallel runs build it once."""
    guard_path = cache_dir() / "images" / f"{tag.split(':')[1]}.lock"
    guard_path.parent.mkdir(parents=True, exist_ok=True)
    with open(guard_path, "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


def env_image_changes(spec: RunSpec) -> list[str]:
    return [
        f"ENV PATH={IMAGE_PATH}",
        "ENV VIRTUAL_ENV=/opt/env",
        "WORKDIR /code",
        f"LABEL {IMAGE_KIND}=env",
        f"LABEL {CONTAINER_KIND}=",  # committed from a build container: not one itself
        f"LABEL runner.base={spec.env.image}",
    ]


def client() -> Any:
    """The engine's client: one per process (made by whichever thread asks first)."""
    with _CLIENT_LOCK:
        return _client()


@functools.cache
def _client() -> Any:
    import docker
    from docker.errors import DockerException

    try:
        return docker.from_env(version=api_version(), timeout=120)
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise BackendUnavailable(
            f"No Docker engine answers at {where}. Start one (sudo systemctl start docker, or sudo dockerd &), "
            "or run without containers: backend=local."
        ) from exc


def api_version() -> str:
    """The engine's API version, from its `/_ping` (the engine must answer). docker's own "auto" asks `/version`,
    which makes the engine run its runtimes to say theirs: tens of milliseconds in each run's two processes."""
    import docker
    from docker.constants import MINIMUM_DOCKER_API_VERSION
    from docker.errors import DockerException

    try:
        with docker.from_env(version=MINIMUM_DOCKER_API_VERSION, timeout=120).api as api:
            # The SDK's own call: with the client's timeout and configured headers.
            answer = api._get(api._url("/_ping", versioned_api=False))
            answer.raise_for_status()
            return str(answer.headers["Api-Version"])
    except Exception as exc:  # as docker's "auto" says it
        raise DockerException(f"Error while fetching server API version: {exc}") from exc


def tls_env_in_container(has_ca: bool) -> dict[str, str]:
    if not has_ca:
        return {}
    return {k: CA_PATH for k in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}


def _bind(src: Path | str, dst: str, read_only: bool) -> Any:
    from docker.types import Mount

    return Mount(target=dst, source=str(src), type="bind", read_only=read_only)


def device_requests(spec: RunSpec) -> list[Any]:
    from docker.types import DeviceRequest

    if not spec.env.gpu:
        return []
    wanted = spec.resources.gpus
    if isinstance(wanted, tuple):
        return [DeviceRequest(device_ids=list(wanted), capabilities=[["gpu"]])]
    return [DeviceRequest(count=-1 if wanted is None else wanted, capabilities=[["gpu"]])]


def container_spec(
    spec: RunSpec, run_dir: RunDir, image: str, env: dict[str, str], env_folder: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for `containers.run`: the whole container, decided before anything starts (`env_folder`:
    the environment's folder in the store, mounted read-only at /opt/env; None: the image holds it)."""
    mounts = [
        _bind(run_dir.code, "/code", False),  # the run's own copy: what it writes there is kept (workdir/)
        _bind(run_dir.output, "/output", False),
        _bind(run_dir.harness, "/opt/runner", True),
        _bind(run_dir.spool, SPOOL_PATH, False),
        _bind(run_dir.checkpoint, CHECKPOINT_PATH, False),
        *(_bind(m.source, m.target, True) for m in spec.mounts),  # datasets, read-only
    ]
    if spec.env.ca_bundle:
        mounts.append(_bind(spec.env.ca_bundle, CA_PATH, True))
    if env_folder:
        mounts.append(_bind(env_folder, envstore.ENV_PATH, True))
    kwargs: dict[str, Any] = {
        "image": image,
        "command": list(spec.argv),
        "name": f"runner-{env['MLFLOW_RUN_ID']}",
        "labels": {
            CONTAINER_KIND: "run",
            RUN_LABEL: env["MLFLOW_RUN_ID"],
            KEEP_LABEL: str(spec.backend_config.keep_container).lower(),
        },
        "user": f"{os.getuid()}:{os.getgid()}",
        "working_dir": "/code",
        "mounts": mounts,
        "environment": {
            **tls_env_in_container(bool(spec.env.ca_bundle)),
            "PATH": IMAGE_PATH,
            "VIRTUAL_ENV": envstore.ENV_PATH,
            **env,
            "HOME": "/tmp",  # any UID can write there; keras and pip keep caches in $HOME
            **harness.run_path("/opt/runner", harness.SITE_IN_CONTAINER, "/code"),
            "RUNNER_CONFIG": "/opt/runner/config.yaml",
            "RUNNER_OUTPUT": "/output",
            "RUNNER_CODE": "/code",
            "RUNNER_SPOOL": SPOOL_PATH,
            "RUNNER_CHECKPOINT_DIR": CHECKPOINT_PATH,
        },
        "network_mode": spec.backend_config.network,
        "init": True,  # a real PID 1 forwards signals, so Ctrl-C and stop reach the process
        # No capability at all, and no gaining any (setuid binaries): a run needs none of Docker's defaults.
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "detach": True,
        "device_requests": device_requests(spec),
    }
    if spec.backend_config.network != "host":
        kwargs["extra_hosts"] = {HOST_ALIAS: "host-gateway"}
    if spec.resources.cpuset:
        kwargs["cpuset_cpus"] = spec.resources.cpuset
    if spec.resources.cpus:
        kwargs["nano_cpus"] = int(spec.resources.cpus * 1e9)
    if spec.resources.memory_bytes:
        kwargs["mem_limit"] = spec.resources.memory_bytes
        kwargs["memswap_limit"] = spec.resources.memory_bytes  # no swap: past the limit is an OOM kill
    return kwargs


def stream_logs(container: Any, log: Log) -> threading.Thread:
    """A build container's output into the log, as it comes."""

    def run() -> None:
        # A character cut between two chunks is written whole with the next.
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        for chunk in container.logs(stream=True, follow=True):
            log.write(decode(chunk))

    thread = threading.Thread(target=run, name="container-logs", daemon=True)
    thread.start()
    return thread


def pump_to_file(container: Any, run_dir: RunDir, scrubber: Scrubber) -> threading.Thread:
    """The run container's output appended to run.log as it comes (LogPump)."""
    pump = LogPump(run_dir, scrubber)

    def run() -> None:
        with pump.open() as out:
            pump.stream(container.logs(stream=True, follow=True), out)
            pump.end(out)

    thread = threading.Thread(target=run, name="container-logs", daemon=True)
    thread.start()
    return thread


def with_secrets(kwargs: dict[str, Any], run_dir: RunDir, secrets: dict[str, str]) -> dict[str, Any]:
    """The container with its secrets in a file read at start, not in its config (`docker inspect` shows that):
    the file is the owner's only, mounted read-only, sourced by `sh` before the command."""
    if not secrets:
        return kwargs
    fd = os.open(run_dir.secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in secrets.items())
    return {
        **kwargs,
        "mounts": [*kwargs["mounts"], _bind(run_dir.secrets, SECRETS_PATH, True)],
        "command": ["/bin/sh", "-c", f'. {SECRETS_PATH} && exec "$@"', "run", *kwargs["command"]],
    }


@dataclass(frozen=True, kw_only=True)
class DockerPlan(Plan):
    """A Docker run: its container (`containers.run`'s keyword arguments; a session's with its ports), the
    tracking endpoint's (bind address, name the run reaches it by, other names), and whether the container
    stays. In plan.json, the container's arguments are at the top level, beside the plan's own keys."""

    container: dict[str, Any] = field(default_factory=dict)
    tracking: tuple[str, str, tuple[str, ...]] = ("127.0.0.1", "127.0.0.1", ())
    keep: bool = False

    OWN = ("said", "tracking", "secrets", "keep")

    def variable(self, name: str) -> str | None:
        return self.container.get("environment", {}).get(name)

    def to_json(self) -> dict[str, Any]:
        bind, reach_as, names = self.tracking
        return {
            **self.container,
            **({"said": self.said} if self.said else {}),
            "tracking": [bind, reach_as, list(names)],
            "secrets": list(self.secrets),
            "keep": self.keep,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DockerPlan:
        bind, reach_as, names = data["tracking"]
        return cls(
            container={k: v for k, v in data.items() if k not in cls.OWN},
            tracking=(bind, reach_as, tuple(names)),
            keep=data["keep"],
            secrets=tuple(data["secrets"]),
            said=data.get("said"),
        )


class DockerHandle(RunHandle):
    def __init__(self, run_id: str, container: Any, run_dir: RunDir, keep: bool, secrets: list[str]):
        """`secrets`: the values to mask in the run's output."""
        super().__init__(run_id)
        self.container = container
        self.run_dir = run_dir
        self.secrets = secrets
        self.pumper = pump_to_file(container, run_dir, Scrubber(secrets))
        self.keep = keep
        self.engine_away = False  # the engine stopped answering while the run went on (it restarted, say)
        self.cancelled = False  # its owner stopped it: not the engine

    def wait(self, timeout: float | None = None) -> Outcome | None:
        import requests

        try:
            result = self.container.wait(timeout=None if timeout is None else max(timeout, 0.05))
        except requests.exceptions.ReadTimeout:
            return None
        except requests.exceptions.ConnectionError:  # a read timeout, as the SDK says it; or the engine away
            if not self.engine_answers():
                self.engine_away = True
                time.sleep(min(timeout if timeout is not None else 1.0, 1.0))
            return None
        code = int(result.get("StatusCode", -1))
        if code != 0 and not self.cancelled and not self.engine_away:
            self.container.reload()
            if ended_before_boot(self.container.attrs["State"]):  # the machine went down with the run
                said = f"the engine stopped the run: the machine restarted (exit code {code})"
                return Outcome(FAILED, code, said, interrupted=True)
        # An engine that shuts down stops its containers (SIGTERM, then SIGKILL) and goes: a run that ends so, as
        # its engine leaves, was stopped by it.
        if code != 0 and not self.engine_away and not self.cancelled:
            self.engine_away = self.engine_leaves(ENGINE_LEAVES if code in (128 + 15, 128 + 9) else 0.0)
        if self.engine_away and not self.engine_back():
            return None  # asked again: the run's ending is read once the engine is back
        if self.engine_away:  # the output since the engine went away: read again from where run.log is
            self.pumper.join(timeout=10)
            self.pumper = pump_to_file(self.container, self.run_dir, Scrubber(self.secrets))
        self.pumper.join(timeout=10)
        self.container.reload()
        state = self.container.attrs["State"]
        if state.get("OOMKilled"):
            return Outcome(FAILED, code, "OOMKilled")
        if code != 0 and self.engine_away:
            said = f"the engine stopped the run: the Docker engine went away meanwhile (exit code {code})"
            return Outcome(FAILED, code, said, interrupted=True)
        return Outcome(FINISHED, 0) if code == 0 else Outcome(FAILED, code, f"exit code {code}")

    def engine_answers(self) -> bool:
        try:
            return bool(self.container.client.ping())
        except Exception:
            return False

    def engine_leaves(self, within: float) -> bool:
        """Whether the engine stops answering now or within `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            if not self.engine_answers():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def engine_back(self, within: float = 60.0) -> bool:
        """Whether the engine answers again within `within` seconds."""
        deadline = time.monotonic() + within
        while not self.engine_answers():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)
        return True

    def cancel(self, grace: float | None = None) -> None:
        from docker.errors import APIError, NotFound

        self.cancelled = True
        try:
            # SIGINT as Ctrl-C would (Keras and user code can clean up); SIGTERM: save a checkpoint and exit.
            self.container.kill(signal="SIGINT" if grace is None else "SIGTERM")
            self.container.wait(timeout=5 if grace is None else grace)
        except NotFound:
            return
        except Exception:
            with contextlib.suppress(NotFound, APIError):
                self.container.stop(timeout=3)

    def release(self) -> None:
        from docker.errors import APIError, NotFound

        self.run_dir.secrets.unlink(missing_ok=True)
        if self.keep:
            return
        with contextlib.suppress(NotFound, APIError):
            self.container.remove(force=True)


class DockerBackend(HostBackend[DockerPlan]):
    name = "docker"
    plan_type = DockerPlan

    def __init__(self) -> None:
        self.docker = client()
        self._bases: dict[str, Any] = {}  # base images by name, looked up once per run

    def check(self, spec: RunSpec) -> None:
        """What the engine would refuse, refused first (before any run exists), in one line."""
        from docker.errors import NotFound

        info = self.docker.info() if spec.resources.cpus or spec.env.gpu else {}  # asked only when needed
        if spec.resources.cpus and spec.resources.cpus > info.get("NCPU", spec.resources.cpus):
            raise ConfigError(
                f"resources.cpus: {spec.resources.cpus:g} is more than this engine's {info['NCPU']} CPUs. "
                f"Use at most {info['NCPU']}, or null for no limit."
            )
        network = spec.backend_config.network
        if spec.session is not None and network in ("host", "none"):
            raise ConfigError(
                f"mode=jupyter publishes JupyterLab on this host's 127.0.0.1 from a container network: "
                f"backend.network={network} has none. Use bridge (the default) or a network of your own."
            )
        if network not in ("bridge", "host", "none"):
            try:
                self.docker.networks.get(network)
            except NotFound:
                names = sorted(n.name for n in self.docker.networks.list())
                raise ConfigError(
                    f"backend.network: no Docker network '{network}' here. Networks: {', '.join(names)} "
                    f"(or create it: docker network create {network})."
                ) from None
        if spec.env.gpu:
            runtimes = info.get("Runtimes", {})
            if "nvidia" not in runtimes and not _which("nvidia-container-runtime-hook"):
                raise BackendUnavailable(
                    "env.gpu=true, but this Docker engine has no NVIDIA runtime (install nvidia-container-toolkit "
                    f"and restart dockerd; runtimes here: {', '.join(runtimes) or 'none'}). Use env.gpu=false."
                )
        self.base_image(spec.env.image)

    def base_image(self, name: str) -> Any:
        """The base image, pulled if missing; says how to build one where no registry answers."""
        from docker.errors import APIError, ImageNotFound

        if name in self._bases:
            return self._bases[name]
        try:
            self._bases[name] = self.docker.images.get(name)
            return self._bases[name]
        except ImageNotFound:
            pass
        try:
            self._bases[name] = self.docker.images.pull(name)
            return self._bases[name]
        except APIError as exc:
            raise BackendUnavailable(
                f"Base image '{name}' is not here and cannot be pulled ({exc.explanation or exc}). "
                f"Build one from Debian's packages, no registry needed: runner image base --tag {name}"
            ) from exc

    def lock_target(self, spec: RunSpec) -> tuple[str, str | None]:
        """The base image's Python and platform, probed once per image id."""
        base = self.base_image(spec.env.image)
        probe = cache_dir() / "probes" / base.id.replace(":", "_")
        if not probe.is_file():
            script = (
                "import platform, sys; print('%d.%d' % sys.version_info[:2]); "
                "print(platform.machine()); print(platform.libc_ver()[1])"
            )
            out = self.docker.containers.run(
                base.id, ["python3", "-c", script], remove=True, network_mode="none"
            )
            write_whole(probe, out)
        version, machine, glibc = [*probe.read_text().splitlines(), "", "", ""][:3]
        platform = None
        if machine in ("x86_64", "aarch64") and glibc.startswith("2."):
            platform = f"{machine}-manylinux_2_{min(int(glibc.split('.')[1]), 40)}"
        return version, platform

    def image_tag(self, spec: RunSpec, lock: str, harness_image: str) -> str:
        # The host's uv is mounted into builds: its version is one of the in-image pieces.
        digest = content_hash(
            harness_image, lock, *spec.env.setup, IN_IMAGE_VERSION, COPY_SCRIPT, envstore.SCRIPT,
            envstore.VERSION, uv_version(),
        )  # fmt: skip
        return f"{ENV_REPO}:{digest[:16]}"

    def prepare(self, spec: RunSpec, lock: str, log: Log, image: bool = False) -> Prepared:
        """The run's environment: its folder in the env store on the harness image; or an image of its own where
        the run needs one (env.setup commands, a session's JupyterLab, `image`: asked for)."""
        harness_image, harness_lock = self.harness_image(spec, log)
        base = self.base_image(spec.env.image)
        tags = {"runner.image.base": f"{spec.env.image}@{base.id}", "runner.image.harness": harness_image.id}
        if not image and not spec.env.setup and spec.session is None:
            key, folder, built_s = self.env_folder(spec, lock, log)
            tags |= {
                "runner.image": harness_image.tags[0] if harness_image.tags else harness_image.id,
                "runner.image.id": harness_image.id,
                "runner.env.folder": str(folder),
                "runner.env.hash": key,
                "runner.env.reused": str(built_s is None).lower(),
                **({"runner.env.build_s": f"{built_s:.2f}"} if built_s is not None else {}),
            }
        else:
            tags |= self.env_image(spec, lock, harness_image.id, log)
        return Prepared(
            env_id=tags.get("runner.env.folder") or tags["runner.image.id"],
            tags=tags,
            harness_lock=harness_lock,
            harness_site=harness.SITE_IN_CONTAINER,
        )

    def env_image(self, spec: RunSpec, lock: str, harness_image: str, log: Log) -> dict[str, str]:
        """An image holding the environment (and a session's JupyterLab on top), once per content hash: its tags."""
        from docker.errors import ImageNotFound

        tag = self.image_tag(spec, lock, harness_image)
        with _building(tag):  # parallel runs of one env build it once
            try:
                image = self.docker.images.get(tag)
                log.write(f"[runner] image {tag}: reused\n")
                reused = True
            except ImageNotFound:
                log.write(f"[runner] image {tag}: building from {spec.env.image}\n")
                image = self._build(spec, lock, tag, harness_image, log)
                reused = False
        tags = {"runner.image": tag, "runner.image.id": image.id, "runner.env.reused": str(reused).lower()}
        if spec.session is not None:  # JupyterLab on top of the run's own environment, once per content hash
            image = self._jupyter_layer(spec, image, lock, log)
            tags |= {
                "runner.image.jupyter": image.tags[0] if image.tags else image.id,
                "runner.image.id": image.id,
            }
        return tags

    def env_folder(self, spec: RunSpec, lock: str, log: Log) -> tuple[str, Path, float | None]:
        """The environment's folder in the store, built once per content hash: (its key, its path, the seconds its
        build took here: None where it was reused)."""
        base = self.base_image(spec.env.image)
        bytecode = envstore.bytecode_script()
        pieces = (base.id, envstore.VERSION, envstore.SCRIPT, bytecode, uv_version())  # all but the lock
        key = content_hash(base.id, lock, *pieces[1:])[:16]
        target = envstore.folder(key)
        with _building(f"{ENV_REPO}:{key}"), envstore.held():
            envstore.claim_process(key)  # gc keeps it from here to the run's own note (furnish)
            if target.is_dir():
                log.write(f"[runner] environment {key}: reused\n")
                return key, target, None
            with envstore.one_build(), tempfile.TemporaryDirectory(prefix="runner-build-") as tmp:
                build_id = content_hash(*pieces)
                seed = envstore.seed(build_id, lock)
                log.write(
                    f"[runner] environment {key}: building from {spec.env.image} "
                    + (f"on environment {seed}'s packages, " if seed else "")
                    + "(packages stored before are linked)\n"
                )
                (Path(tmp) / "requirements.lock").write_text(lock)
                (Path(tmp) / "bytecode.py").write_text(bytecode)
                ca = [_bind(spec.env.ca_bundle, CA_PATH, True)] if spec.env.ca_bundle else []
                mounts = [
                    _bind(tmp, "/build", True),
                    _bind(envstore.root(), envstore.STORE_PATH, False),
                    _bind(uv_bin(), "/usr/local/bin/uv", True),
                    *ca,
                ]
                env = {
                    **tls_env_in_container(bool(spec.env.ca_bundle)),
                    **uv_index_env(os.environ, spec.env.index_url),
                    **envstore.build_env(),
                    "BUILD_NAME": envstore.partial_name(key),
                    "BUILD_ID": build_id,
                    "SEED": seed or "",
                }
                built, began = False, time.monotonic()
                linking = threading.Thread(target=envstore.link_seed, args=(seed, Path(tmp), lock, key))
                if seed:  # while the engine starts the build's container
                    linking.start()
                try:
                    with self._contained(
                        spec, base.id, envstore.SCRIPT, mounts, env, log, f"environment {key}"
                    ):
                        built = True
                finally:
                    if seed:
                        linking.join()
                    target = envstore.settle(key, built)
            took = time.monotonic() - began
            log.write(f"[runner] environment {key}: built in {took:.1f} s\n")
            return key, target, took

    def harness_image(self, spec: RunSpec, log: Log) -> tuple[Any, str]:
        """The base image with the runner's in-run pieces in a layer of their own (harness.SITE_IN_CONTAINER),
        once per base image and lock: every env image of that base is built on it, and shares it."""
        from docker.errors import ImageNotFound

        locked = harness.lock(
            Target(*self.lock_target(spec)), spec.env.ca_bundle, os.environ, spec.env.index_url
        )
        base = self.base_image(spec.env.image)
        tag = f"{HARNESS_REPO}:{content_hash(base.id, locked, HARNESS_SCRIPT, uv_version())[:16]}"
        with _building(tag):
            try:
                return self.docker.images.get(tag), locked
            except ImageNotFound:
                log.write(f"[runner] image {tag}: the runner's in-run packages on {spec.env.image}\n")
            repo, _, version = tag.partition(":")
            with tempfile.TemporaryDirectory(prefix="runner-build-") as tmp:
                (Path(tmp) / "harness.lock").write_text(locked)
                image = self._build_step(
                    spec, base.id, HARNESS_SCRIPT, self._build_mounts(spec, tmp), self._build_env(spec), log, tag,
                    {"repository": repo, "tag": version}, [f"LABEL {IMAGE_KIND}=harness", f"LABEL {CONTAINER_KIND}="],
                )  # fmt: skip
            return image, locked

    @staticmethod
    def _build_mounts(spec: RunSpec, folder: str) -> list[Any]:
        """A build container's mounts: `folder` at /build, the shared wheel cache, the host's uv, the CA."""
        wheels = cache_dir() / "uv-docker"  # wheel cache shared by every build
        wheels.mkdir(parents=True, exist_ok=True)
        ca = [_bind(spec.env.ca_bundle, CA_PATH, True)] if spec.env.ca_bundle else []
        return [
            _bind(folder, "/build", True),
            _bind(wheels, "/uv-cache", False),
            _bind(uv_bin(), "/usr/local/bin/uv", True),
            *ca,
        ]

    @staticmethod
    def _build_env(spec: RunSpec) -> dict[str, str]:
        return {
            **tls_env_in_container(bool(spec.env.ca_bundle)),
            **uv_index_env(os.environ, spec.env.index_url),
            "UV_CACHE_DIR": "/uv-cache",
            "UV_LINK_MODE": "copy",
            "UV_NO_PROGRESS": "1",
        }

    def _jupyter_layer(self, spec: RunSpec, env_image: Any, lock: str, log: Log) -> Any:
        """The env image with JupyterLab installed on top (the env's own packages kept at their locked versions),
        tagged by the content hash of both."""
        from docker.errors import ImageNotFound

        assert spec.session is not None
        requirement = f"jupyterlab=={spec.session.version}"
        tag = f"{ENV_REPO}:{content_hash(env_image.id, requirement, JUPYTER_SCRIPT)[:16]}"
        with _building(tag):
            try:
                image = self.docker.images.get(tag)
                log.write(f"[runner] image {tag} (JupyterLab {spec.session.version}): reused\n")
                return image
            except ImageNotFound:
                log.write(f"[runner] image {tag}: installing JupyterLab {spec.session.version} on top\n")
            repo, _, version = tag.partition(":")
            with tempfile.TemporaryDirectory(prefix="runner-build-") as tmp:
                (Path(tmp) / "requirements.lock").write_text(lock)
                (Path(tmp) / "jupyter.txt").write_text(requirement + "\n")
                return self._build_step(
                    spec, env_image.id, JUPYTER_SCRIPT, self._build_mounts(spec, tmp), self._build_env(spec), log,
                    tag, {"repository": repo, "tag": version}, env_image_changes(spec),
                )  # fmt: skip

    def session_packages(self, image_id: str) -> str:
        """`uv pip freeze` of a session's image, as its build wrote it (read once per image)."""
        kept = cache_dir() / "probes" / f"session-packages-{image_id.replace(':', '_')}.txt"
        if not kept.is_file():
            out = self.docker.containers.run(
                image_id, ["cat", SESSION_PACKAGES], remove=True, network_mode="none"
            )
            write_whole(kept, out)
        return kept.read_text()

    def _build(self, spec: RunSpec, lock: str, tag: str, on: str, log: Log) -> Any:
        """The environment's folder copied into an image of `on`; then, in a second container, the config's
        `env.setup` commands (without the store mounted: a user's command must not change what other
        environments link)."""
        tls = tls_env_in_container(bool(spec.env.ca_bundle))
        ca = [_bind(spec.env.ca_bundle, CA_PATH, True)] if spec.env.ca_bundle else []
        changes = env_image_changes(spec)
        repo, _, version = tag.partition(":")
        _, folder, _ = self.env_folder(spec, lock, log)
        image = self._build_step(
            spec, on, COPY_SCRIPT, [_bind(folder, "/env", True)], {}, log, tag,
            {"repository": repo, "tag": version} if not spec.env.setup else {}, changes,
        )  # fmt: skip
        if not spec.env.setup:
            return image
        script = "set -eu\n" + "".join(f"{cmd}\n" for cmd in spec.env.setup)
        try:
            return self._build_step(
                spec, image.id, script, ca, tls, log, tag, {"repository": repo, "tag": version}, changes
            )
        except EnvBuildError:  # the installed first step is untagged: nothing would ever remove it
            with contextlib.suppress(Exception):
                self.docker.images.remove(image.id, force=True)
            raise

    def _build_step(
        self,
        spec: RunSpec,
        image: str,
        script: str,
        mounts: list[Any],
        env: dict[str, str],
        log: Log,
        tag: str,
        name: dict[str, str],
        changes: list[str],
    ) -> Any:
        """`script` run in a container of `image`, committed (under `name`, when given)."""
        with self._contained(spec, image, script, mounts, env, log, f"image {tag}", root=True) as container:
            return container.commit(**name, changes=changes)

    @contextlib.contextmanager
    def _contained(
        self,
        spec: RunSpec,
        image: str,
        script: str,
        mounts: list[Any],
        env: dict[str, str],
        log: Log,
        what: str,
        root: bool = False,
    ) -> Iterator[Any]:
        """`script` run to its end in a container of `image` (as root, or as the invoking user), its output in the
        log; the ended container, removed after. A failed script: said, naming `what` it was building."""
        container = self.docker.containers.run(
            image,
            ["sh", "-c", script],
            detach=True,
            mounts=mounts,
            environment=env,
            labels={CONTAINER_KIND: "build"},
            user="" if root else f"{os.getuid()}:{os.getgid()}",
            # A build fetches packages: a run cut off from the network (none) still has its image built.
            network_mode="bridge" if spec.backend_config.network == "none" else spec.backend_config.network,
        )
        try:
            pumper = stream_logs(container, log)
            code = int(container.wait()["StatusCode"])
            pumper.join(timeout=10)
            if code != 0:
                if b"no space left on device" in container.logs(tail=50).lower():
                    raise build_disk_full()
                raise EnvBuildError(
                    f"Building {what} failed (exit {code}); the build log is above and in the run's log."
                )
            yield container
        finally:
            container.remove(force=True)

    def gateway(self, network: str) -> str:
        """The host's address on the container network (where the tracking server listens)."""
        import ipaddress

        config = self.docker.networks.get(network).attrs["IPAM"]["Config"][0]
        if config.get("Gateway"):
            return str(config["Gateway"])
        # Docker's default: the first address.
        return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))

    def furnish(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared) -> None:
        """A session's access file (its port on the host's 127.0.0.1, its token), and the packages its image
        holds beside the lock (JupyterLab and what it brought) for its record; and, for an environment of the
        store, that this run needs it (runner gc keeps it meanwhile)."""
        if "runner.env.hash" in prepared.tags:
            envstore.claim(prepared.tags["runner.env.hash"], run_dir.root)
        if spec.session is None:
            return
        from runner.runs import session

        port, _ = session.port_for(spec.session.port)
        session.write(run_dir, port)
        (run_dir.record / "session-packages.txt").write_text(self.session_packages(prepared.env_id))

    def plan(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared, env: dict[str, str]) -> DockerPlan:
        container = container_spec(
            spec, run_dir, prepared.tags["runner.image.id"], env, prepared.tags.get("runner.env.folder")
        )
        said = None
        # A session: JupyterLab instead of the command, on the host's 127.0.0.1 only (furnish chose its port).
        if spec.session is not None:
            from runner.runs import session

            port = (session.read(run_dir) or {})["port"]
            container["command"] = session.command(spec.resources.idle_timeout)
            container["ports"] = {f"{session.PORT_IN_CONTAINER}/tcp": ["127.0.0.1", port]}
            said = session.port_taken(spec.session.port, port)
        # With no network (none) the run reaches no one; its spool still works.
        if spec.backend_config.network in ("host", "none"):
            tracking: tuple[str, str, tuple[str, ...]] = ("127.0.0.1", "127.0.0.1", ())
        else:
            gateway = self.gateway(spec.backend_config.network)
            tracking = (gateway, HOST_ALIAS, (HOST_ALIAS, gateway))
        return DockerPlan(
            container=container,
            tracking=tracking,
            keep=spec.backend_config.keep_container,
            secrets=tuple(spec.env.secrets),
            said=said,
        )

    def tracking_bind(self, plan: DockerPlan) -> tuple[str, str, tuple[str, ...]]:
        return plan.tracking

    def start(self, plan: DockerPlan, run_dir: RunDir, env: dict[str, str]) -> RunHandle:
        kwargs = {**plan.container, "environment": {**plan.container["environment"], **env}}
        secrets = {name: os.environ[name] for name in plan.secrets if name in os.environ}
        # A session: (address, port) pairs, and its token among the secrets.
        if "ports" in kwargs:
            from runner.runs import session

            kwargs["ports"] = {k: tuple(v) for k, v in kwargs["ports"].items()}
            access = session.read(run_dir)
            if access is None:
                raise RunnerError(f"the session's access file {run_dir.session} is gone: start it again")
            secrets[session.TOKEN_VARIABLE] = access["token"]
        kwargs = with_secrets(kwargs, run_dir, secrets)
        kwargs["name"] = attempt_name(kwargs["name"], env)
        container = self._run(kwargs, run_dir)
        return DockerHandle(
            kwargs["labels"][RUN_LABEL], container, run_dir, plan.keep, secret_values(secrets, secrets)
        )

    def _run(self, kwargs: dict[str, Any], run_dir: RunDir) -> Any:
        """The container started (a session's port taken meanwhile: another one, up to twice)."""
        from docker.errors import APIError, NotFound

        for attempt in range(3):
            try:
                return self.docker.containers.run(**kwargs)
            except APIError as exc:  # created but not started: nothing of it may stay
                with contextlib.suppress(NotFound, APIError):
                    self.docker.api.remove_container(kwargs["name"], force=True)
                said = str(exc.explanation or exc)
                if "ports" in kwargs and attempt < 2 and ("already allocated" in said or "in use" in said):
                    # Taken since it was chosen.
                    kwargs["ports"] = self._another_port(run_dir, kwargs["ports"])
                    continue
                run_dir.secrets.unlink(missing_ok=True)
                raise RunnerError(f"Docker could not start the run: {said}") from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _another_port(run_dir: RunDir, ports: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
        """A session's port taken between its choice and the container's start: the next free one, said in the
        log and kept in the session's file (where the terminal's runner reads the address)."""
        from runner.harness.shim import write_json
        from runner.runs import session

        ((inside, (address, taken)),) = ports.items()
        port, _ = session.port_for(taken)
        access = session.read(run_dir) or {}
        write_json(run_dir.session, {**access, "port": port}, private=True)
        with open(run_dir.log, "a", encoding="utf-8") as log:
            log.write(f"[runner] port {taken} was taken meanwhile: JupyterLab gets port {port}\n")
        return {inside: (address, port)}

    def gc(self) -> str:
        """Remove the runner's own stopped containers, the env images and env folders no container uses, and the
        stored packages no environment links; say how much space was freed. Containers anyone else created (from
        any image, runner images included) are never touched, nor images that carry another tag besides
        `runner-env:`."""
        said = remove_unused(self.docker)
        mounted = {
            m.get("Source", "") for c in self.docker.containers.list(all=True) for m in c.attrs["Mounts"]
        }
        try:
            envs, freed = envstore.gc(mounted)
        except BlockingIOError:
            return f"{said} Environments kept: one is being built (run runner gc again after)."
        return f"{said} Removed {envs} environment folder(s) and the packages only they held; freed {freed / 1e6:.1f} MB."

    def reattach(self, run_id: str, run_dir: RunDir) -> RunHandle | None:
        found = runner_containers(self.docker, run_id, kinds=("run",))
        if not found:
            return None
        latest = max(found, key=lambda c: c.attrs.get("Created", ""))  # kept ones of earlier attempts aside
        keep = latest.labels.get(KEEP_LABEL) == "true"
        return DockerHandle(run_id, latest, run_dir, keep, started_secrets(run_dir))


def build_disk_full() -> RunnerError:
    """A build that met a full filesystem: the wheel cache's or the engine's data root, whichever is full."""
    root = space.engine_root()
    where = next(
        (p for p in (cache_dir(), root) if p is not None and not space.has_room(p)), root or cache_dir()
    )
    return space.DiskFull(space.said(where, None, f", which holds {where}: the environment's build stopped"))


def ended_before_boot(state: dict[str, Any], boot: float | None = None) -> bool:
    """Whether a container's run ended before this machine last started (the engine stopped it at shutdown)."""
    import datetime

    finished = str(state.get("FinishedAt") or "")
    try:
        when = datetime.datetime.fromisoformat(finished[:19]).replace(tzinfo=datetime.UTC)
        if boot is None:
            stat = Path("/proc/stat").read_text().split("\nbtime ")[1]
            boot = float(stat.split()[0])
    except (OSError, ValueError, IndexError):
        return False
    return when.year > 1 and when.timestamp() < boot


def attempt_name(name: str, env: dict[str, str]) -> str:
    """A container's name for the run's attempt: a kept container of an earlier attempt keeps its own."""
    attempt = env.get("RUNNER_ATTEMPT", "1")
    return name if attempt == "1" else f"{name}-{attempt}"


def started_secrets(run_dir: RunDir, names: list[str] | None = None) -> list[str]:
    """The secret values the run started with, to mask: read back from its secrets file (the shell of a later
    owner may not have them; `names`: the secrets among what it holds), else from this environment by the plan's
    names."""
    try:
        lines = run_dir.secrets.read_text().splitlines()
        found = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines if "=" in line
        )
        if names is not None:
            found = {k: v for k, v in found.items() if k in names}
        return secret_values(found, found)
    except (OSError, ValueError):
        plan = json.loads(run_dir.plan.read_text()) if run_dir.plan.is_file() else {}
        return secret_values(plan.get("secrets", []))


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def made_by_runner(container: Any, kinds: tuple[str, ...] = ("run", "build")) -> bool:
    """True for a container the runner labelled when it created it, not one that inherited a label from
    the image it was created from (anyone may create containers from runner images)."""
    from docker.errors import NotFound

    try:
        image_labels = container.client.api.inspect_image(container.attrs["Image"])["Config"].get("Labels")
    except NotFound:
        # Its image is unknown: whether the label was inherited cannot be told, so it is not ours.
        return False
    image_labels = image_labels or {}
    for key in (CONTAINER_KIND, LEGACY_KIND):
        value = container.labels.get(key)
        if value in kinds and image_labels.get(key) != value:
            return True
    return False


def runner_containers(
    c: Any, run_id: str | None = None, kinds: tuple[str, ...] = ("run", "build")
) -> list[Any]:
    """Containers the runner made (of a run, when `run_id` is given), running or not."""
    found: dict[str, Any] = {}
    for key in (CONTAINER_KIND, LEGACY_KIND):
        filters = {"label": [key] + ([f"{RUN_LABEL}={run_id}"] if run_id else [])}
        for container in c.containers.list(all=True, filters=filters):
            if made_by_runner(container, kinds):
                found[container.id] = container
    return list(found.values())


def _built_on(c: Any, image: Any) -> bool:
    """Whether another image holds all of `image`'s layers (an env image built on it, a loaded one included)."""
    layers = image.attrs["RootFS"]["Layers"]
    return any(
        other.id != image.id and other.attrs["RootFS"]["Layers"][: len(layers)] == layers
        for other in c.images.list()
    )


def remove_unused(c: Any) -> str:
    """Remove the runner's own stopped containers, the env images no container uses and the harness images no
    env image is built on; say how much space was freed. Containers anyone else created (from any image, runner
    images included) are never touched, nor images that carry another tag besides the runner's."""
    from docker.errors import APIError, NotFound

    layers_before = c.df().get("LayersSize") or 0
    removed, freed = 0, 0
    for container in runner_containers(c):
        if container.status in ("running", "paused", "restarting"):
            continue
        with contextlib.suppress(NotFound, APIError):
            listed = c.api.containers(all=True, size=True, filters={"id": container.id})
            size = sum(d.get("SizeRw") or 0 for d in listed)
            container.remove(v=True)
            removed += 1
            freed += size
    in_use = {container.attrs["Image"] for container in c.containers.list(all=True)}
    n_images = 0
    # Env images first: then a harness image no image is built on any more (none holds its layers).
    for repo, kind in ((ENV_REPO, "env"), (HARNESS_REPO, "harness")):
        for image in c.images.list(name=repo):
            labels = image.labels or {}
            if image.id in in_use or kind not in (labels.get(IMAGE_KIND), labels.get(LEGACY_KIND)):
                continue
            if kind == "harness" and _built_on(c, image):
                continue
            for tag in image.tags:
                if tag.startswith(f"{repo}:"):
                    with contextlib.suppress(NotFound, APIError):
                        result = c.api.remove_image(tag)
                        n_images += any("Deleted" in r for r in result or [])
    freed += max(0, layers_before - (c.df().get("LayersSize") or 0))
    return f"Removed {removed} container(s) and {n_images} image(s); freed {freed / 1e6:.1f} MB."


BACKEND = DockerBackend
