"""The project's data repository: git for versions, DVC for files. Every other dataset module goes through it."""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.datasets.errors import DataMissing, DatasetError
from runner.runs.gitexclude import exclude_own_files

DATA_DIR = "data"
DVC_FILE = "data.dvc"
DEFAULT_REMOTE = "runner"
# What a data commit holds: the pointer file, and DVC's own files (so a clone finds the remote).
COMMITTED = (DVC_FILE, ".gitignore", ".dvc/config", ".dvc/.gitignore", ".dvcignore")


def default_remote_url() -> Path:
    """The local directory remote set up when a project has none (any DVC remote works instead)."""
    from runner.environment.lock import cache_dir

    return cache_dir() / "dvc-remote"


def quiet_dvc() -> None:
    """DVC's hints are written for its own CLI ("git add data.dvc"); the runner does those steps itself."""
    import logging

    logging.getLogger("dvc").setLevel(logging.WARNING)


class DataRepo:
    def __init__(self, root: Path):
        self.root = root
        self._dvc: Any = None

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR

    @property
    def dvc(self) -> Any:
        if self._dvc is None:
            from dvc.repo import Repo

            quiet_dvc()
            self._dvc = Repo(str(self.root))
        return self._dvc

    def run_dvc(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        """A DVC API call (`add`, `fetch`, `push`, `checkout`) with paths relative to the project root."""
        with contextlib.chdir(self.root):
            return getattr(self.dvc, verb)(*args, **kwargs)

    def git(self, *args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, input=stdin, check=False
        )
        if proc.returncode != 0:
            detail = ((proc.stderr + proc.stdout).strip().splitlines() or ["no output"])[-1]
            raise DatasetError(f"git {args[0]} failed in {self.root}: {detail}")
        return proc.stdout

    def rev(self, rev: str) -> str | None:
        """The commit `rev` names, or None."""
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time: versions are numbered and committed in order."""
        path = self.root / ".runner" / "data.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        exclude_own_files(self.root)
        with open(path, "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            yield

    def ensure_ready(self) -> None:
        """Git repo with an identity, DVC initialised, a default remote; before any change is made."""
        if self.rev("HEAD") is None and not (self.root / ".git").exists():
            raise DatasetError(f"{self.root} is not a git repository: versions are git tags. Run: git init")
        try:
            self.git("var", "GIT_COMMITTER_IDENT")
        except DatasetError:
            raise DatasetError(
                "git has no identity to commit data versions with. Run: git config user.name NAME && "
                "git config user.email EMAIL"
            ) from None
        if not (self.root / ".dvc").is_dir():
            from dvc.repo import Repo

            quiet_dvc()
            Repo.init(
                str(self.root), subdir=self.git("rev-parse", "--show-toplevel").strip() != str(self.root)
            )
            self._dvc = None
        if not self.remote_name():
            url = default_remote_url()
            url.mkdir(parents=True, exist_ok=True)
            with self.dvc.config.edit() as conf:
                conf["remote"][DEFAULT_REMOTE] = {"url": str(url)}
                conf["core"]["remote"] = DEFAULT_REMOTE
            self._dvc = None

    def remote_name(self) -> str | None:
        if not (self.root / ".dvc").is_dir():
            return None
        name = self.dvc.config["core"].get("remote")
        return str(name) if name else None

    def remote_label(self) -> str | None:
        """`name (url)` of the default remote, for messages."""
        name = self.remote_name()
        if not name:
            return None
        url = self.dvc.config["remote"].get(name, {}).get("url", "?")
        return f"{name} ({url})"

    def top_md5(self, rev: str) -> str | None:
        """The md5 of data/ that data.dvc records at commit `rev`."""
        import yaml

        proc = subprocess.run(
            ["git", "show", f"{rev}:{DVC_FILE}"], cwd=self.root, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            return None
        outs = (yaml.safe_load(proc.stdout) or {}).get("outs") or [{}]
        md5 = outs[0].get("md5")
        return str(md5) if md5 else None

    def fetch(self, name: str, rev: str) -> None:
        """Bring data/NAME as of commit `rev` into the DVC cache from the default remote."""
        from dvc.exceptions import DvcException

        try:
            # DVC's own lock gives up after 3 s: runs fetching at once (a sweep's members) wait here instead.
            with self.lock():
                self.run_dvc("fetch", targets=[f"{DATA_DIR}/{name}"], revs=[rev], workspace=False)
        except DvcException as exc:
            raise DataMissing(f"{name} at {rev[:12]}", self.remote_label()) from exc

    def tree(self, name: str, rev: str) -> Any:
        """DVC's tree object of data/NAME at commit `rev` (fetched if the cache lacks it), or None."""
        top = self.top_md5(rev)
        if top is None:
            return None
        if not self.dvc.cache.local.exists(top):
            self.fetch(name, rev)
            if not self.dvc.cache.local.exists(top):
                raise DataMissing(f"the listing of data/ at {rev[:12]}", self.remote_label())
        return self._subtree(top, name)

    def workspace_md5(self, name: str) -> str:
        """The checksum of data/NAME as the working copy's data.dvc records it."""
        import yaml

        top = yaml.safe_load((self.root / DVC_FILE).read_text())["outs"][0]["md5"]
        sub = self._subtree(str(top), name)
        if sub is None:
            raise DatasetError(f"{DVC_FILE} does not hold {DATA_DIR}/{name} after dvc add.")
        return str(sub.hash_info.value)

    def _subtree(self, top: str, name: str) -> Any:
        from dvc_data.hashfile.hash_info import HashInfo
        from dvc_data.hashfile.tree import Tree

        odb = self.dvc.cache.local
        sub = Tree.load(odb, HashInfo("md5", top)).get_obj(odb, (name,))
        return sub if isinstance(sub, Tree) else None

    def sync_workspace(self) -> None:
        """Make data/ match data.dvc (other datasets must stay as they are in the next version)."""
        from dvc.exceptions import DvcException

        if not (self.root / DVC_FILE).is_file():
            if self.data.exists() and any(self.data.iterdir()):
                raise DatasetError(
                    f"{self.data} exists but no {DVC_FILE} tracks it. Move it aside, then add each dataset "
                    "with: runner data add NAME PATH"
                )
            return
        try:
            self.run_dvc("checkout", targets=[DVC_FILE], force=True)
        except DvcException:
            try:
                self.run_dvc("fetch", targets=[DVC_FILE])
                self.run_dvc("checkout", targets=[DVC_FILE], force=True)
            except DvcException as exc:
                raise DataMissing(f"the data in {DVC_FILE}", self.remote_label()) from exc
