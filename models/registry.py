"""The model registry: versioned artifacts, a ``promoted`` pointer, promotion history.

Layout under the registry folder::

    versions/v0001/  nbo.txt  nbo.calibration.json  channel.txt  channel.calibration.json
                     metadata.json
    promoted         the promoted version's name (one line)
    history.json     promotions, oldest first (what ``rollback`` walks back)

A version is written into a temporary folder and renamed into place, and the pointer and
history are replaced atomically (write a temporary file, then ``os.replace``), so a reader
never sees half a version or half a pointer. Serving watches the pointer file's mtime and
swaps models when it changes.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     reg = Registry(d)
...     v1 = reg.register({"nbo.txt": b"tree"}, {"seed": 7})
...     reg.promote(v1)
...     reg.promoted()
'v0001'
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from omnioffer.settings import Settings

POINTER = "promoted"
HISTORY = "history.json"
METADATA = "metadata.json"
_VERSION = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why."""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see either the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_commit(cwd: Path | None = None) -> str:
    """Return the current git commit (``+dirty`` when the tree has changes), or ``unknown``."""
    where = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


class Registry:
    """Versions of trained models under one folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    # --- versions -----------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Return every registered version, oldest first."""
        if not self.versions_dir.exists():
            return []
        found = [p.name for p in self.versions_dir.iterdir() if _VERSION.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def path(self, version: str) -> Path:
        """Return a version's folder; ``RegistryError`` names an unknown version."""
        if not _VERSION.match(version) or not (self.versions_dir / version).is_dir():
            known = ", ".join(self.versions()) or "none"
            message = f"unknown model version {version!r}; registered: {known}"
            raise RegistryError(message)
        return self.versions_dir / version

    def metadata(self, version: str) -> dict[str, Any]:
        """Return a version's metadata."""
        return orjson.loads((self.path(version) / METADATA).read_bytes())

    def register(self, files: Mapping[str, bytes], metadata: Mapping[str, Any]) -> str:
        """Store artifacts and metadata as the next version; return its name.

        The version folder appears complete or not at all (written aside, then renamed).
        """
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".staging-"))
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            while True:
                existing = self.versions()
                number = int(existing[-1][1:]) + 1 if existing else 1
                version = f"v{number:04d}"
                meta = {"version": version, **metadata}
                (staging / METADATA).write_bytes(
                    orjson.dumps(meta, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                )
                try:
                    # rename fails if another writer took the number first: try the next.
                    staging.rename(self.versions_dir / version)
                    return version
                except OSError:
                    if not (self.versions_dir / version).exists():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- promotion ----------------------------------------------------------------------
    def promoted(self) -> str | None:
        """Return the promoted version, or ``None``."""
        pointer = self.root / POINTER
        if not pointer.exists():
            return None
        return pointer.read_text().strip() or None

    def history(self) -> list[dict[str, str]]:
        """Return the promotions, oldest first: ``{version, at, action}``."""
        path = self.root / HISTORY
        return orjson.loads(path.read_bytes()) if path.exists() else []

    def _point(self, version: str, action: str, history: list[dict[str, str]]) -> None:
        at = datetime.now(UTC).isoformat(timespec="seconds")
        history = [*history, {"version": version, "at": at, "action": action}]
        atomic_write(self.root / HISTORY, orjson.dumps(history, option=orjson.OPT_INDENT_2))
        atomic_write(self.root / POINTER, f"{version}\n".encode())

    @contextmanager
    def _promoting(self) -> Iterator[None]:
        """Hold the registry's promotion lock: two promotions at once both keep their line."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "promote.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def promote(self, version: str) -> None:
        """Point serving at ``version``."""
        self.path(version)
        with self._promoting():
            self._point(version, "promote", self.history())

    def rollback(self) -> str:
        """Promote the version that was promoted before the current one; return it."""
        with self._promoting():
            current = self.promoted()
            if current is None:
                message = "nothing is promoted: there is nothing to roll back"
                raise RegistryError(message)
            history = self.history()
            stack = _promotion_stack(history)
            if len(stack) < 2:
                message = (f"{current} is the first promoted version: "
                           "there is nothing to roll back to")  # fmt: skip
                raise RegistryError(message)
            previous = stack[-2]
            self._point(previous, "rollback", history)
        return previous


def _promotion_stack(history: list[dict[str, str]]) -> list[str]:
    # Replay the history: a promotion pushes, a rollback pops back to the previous entry.
    stack: list[str] = []
    for entry in history:
        if entry["action"] == "rollback":
            if stack:
                stack.pop()
        else:
            stack.append(entry["version"])
    return stack


def load_scorer(target: str, settings: Settings | None = None) -> Any:
    """Return serving's scorer for a pointer's content (see :mod:`models.adapter`)."""
    from models.adapter import load_scorer as load

    return load(target, settings=settings)
