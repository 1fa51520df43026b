"""Data files (policies, journeys): validated so an error names the entry and the field; reloaded.

msgspec reports a bad value as ``$.levers.offers[...]`` or ``$.journeys[2].steps[0]``;
marketers editing YAML need ``entry 'levers.offers', field 'of-x'`` or
``entry 'journeys.cart_abandonment.steps.reminder', field 'after_hours'``. The walk
follows the schema; list items are named by their ``id`` when they have one.

>>> import msgspec
>>> class Cap(msgspec.Struct):
...     day: int = 1
>>> try:
...     check_document({"day": "two"}, Cap, "caps.yaml", DataFileError)
... except DataFileError as error:
...     print(error)
caps.yaml: entry '(top)', field 'day': Expected `int`, got `str`; got 'two'
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Generic, NoReturn, TypeVar, get_args, get_origin

import msgspec
import yaml

log = logging.getLogger(__name__)

# Patterns mean nothing to a marketer: say what the pattern stands for.
_PATTERN_HINTS = {"regex '^([01]": "expected a local time 'HH:MM'"}


class DataFileError(ValueError):
    """A data file breaks its schema; the message names the file, the entry and the field."""


def fail(
    source: str, path: Sequence[str], problem: str, error: type[DataFileError] = DataFileError
) -> NoReturn:
    """Raise ``error`` naming ``source``, the entry (all but the last path part) and the field."""
    entry = ".".join(path[:-1]) or "(top)"
    name = path[-1] if path else "(document)"
    message = f"{source}: entry '{entry}', field '{name}': {problem}"
    raise error(message)


def read_document(path: Path, what: str, error: type[DataFileError]) -> Any:
    """Read and parse a YAML (or, by suffix, JSON) data file; raise ``error`` if it cannot be.

    ``what`` names the file in the message, e.g. ``"policies"``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as problem:
        message = f"{path}: cannot read the {what} file: {problem.strerror or problem}"
        raise error(message) from None
    try:
        return yaml.safe_load(text) if path.suffix != ".json" else msgspec.json.decode(text)
    except (yaml.YAMLError, msgspec.DecodeError) as problem:
        message = f"{path}: cannot be parsed: {problem}"
        raise error(message) from None


def check_document(
    value: Any, kind: Any, source: str, error: type[DataFileError], path: Sequence[str] = ()
) -> None:
    """Walk ``value`` along the schema ``kind``; raise ``error`` at the first bad entry."""
    path = list(path)
    base = get_args(kind)[0] if get_origin(kind) is Annotated else kind
    if _is_struct(base):
        kind = base
        if not isinstance(value, dict):
            fail(source, path, f"expected a mapping; got {type(value).__name__} {value!r}", error)
        fields = {f.encode_name: f.type for f in msgspec.structs.fields(kind)}
        for key in value:
            if key not in fields:
                problem = f"unknown field; expected one of {sorted(fields)}"
                fail(source, [*path, str(key)], problem, error)
        for key, field_type in fields.items():
            if key in value:
                check_document(value[key], field_type, source, error, [*path, key])
        return
    origin = get_origin(base)
    if origin is dict:
        key_type, value_type = get_args(base)
        if not isinstance(value, dict):
            fail(source, path, f"expected a mapping; got {type(value).__name__} {value!r}", error)
        for key, item in value.items():
            try:
                msgspec.convert(key, key_type, strict=True)
            except msgspec.ValidationError as bad:
                fail(source, [*path, str(key)], f"not a valid key: {bad}", error)
            check_document(item, value_type, source, error, [*path, str(key)])
        return
    if origin is list and _is_struct(get_args(base)[0]):
        if not isinstance(value, list):
            fail(source, path, f"expected a list; got {type(value).__name__} {value!r}", error)
        for index, item in enumerate(value):
            name = item.get("id") if isinstance(item, dict) else None
            check_document(item, get_args(base)[0], source, error, [*path, str(name or index)])
        # Length limits and the like are checked on the whole list below.
    try:
        msgspec.convert(value, kind, strict=True)
    except msgspec.ValidationError as bad:
        problem = str(bad).split(" - at ")[0]
        for pattern, hint in _PATTERN_HINTS.items():
            if pattern in problem:
                problem = hint
        fail(source, path, f"{problem}; got {value!r}", error)


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct)


Stamp = tuple[tuple[str, int, int], ...]
T = TypeVar("T")


def files_stamp(paths: Sequence[Path]) -> Stamp:
    """Return what tells a changed data file: each file's name, modification time and size.

    A folder (the catalog) stands for the files in it. ``OSError`` if a path is missing.
    """
    stamp = []
    for path in paths:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            info = file.stat()
            stamp.append((str(file), info.st_mtime_ns, info.st_size))
    return tuple(stamp)


class Reloadable(Generic[T]):
    """A value built from data files, built again when they change and the result is valid.

    :meth:`get` looks at the files' stamps at most once per ``check_interval_s`` and reloads
    when they changed: at once, or with ``in_background`` in a thread of its own, the caller
    going on with the value in force (a request should not wait for a catalog to load). A
    load that raises is not taken: the last good value stays in force, the error is kept in
    :attr:`error` (logged once per bad version; with its traceback when it is not one of
    ``errors``, the ones that name a file's mistake). The first load must succeed, so a
    service never starts on invalid files.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "caps.yaml").write_text("day: 1")
    6
    >>> caps = Reloadable([folder / "caps.yaml"],
    ...                   lambda: yaml.safe_load((folder / "caps.yaml").read_text()),
    ...                   errors=(ValueError,), what="caps")
    >>> caps.get()
    {'day': 1}
    >>> _ = (folder / "caps.yaml").write_text("day: 2  # and a longer file")
    >>> caps.reload(), caps.get()
    ('reloaded', {'day': 2})
    """

    def __init__(
        self,
        paths: Sequence[Path],
        load: Callable[[], T],
        *,
        errors: tuple[type[Exception], ...],
        what: str,
        check_interval_s: float = 1.0,
        on_reload: Callable[[str], None] | None = None,
        in_background: bool = False,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.in_background = in_background
        self.reloading: threading.Thread | None = None  # the background reload, if one runs
        self._load = load
        self._errors = errors
        self.what = what
        self.check_interval_s = check_interval_s
        self._on_reload = on_reload
        self._next_check = 0.0
        self._lock = threading.Lock()  # one reload at a time; readers never wait for it
        self.error: str | None = None
        self._rejected: Stamp | None = None  # a bad version is reported once
        self.stamp = self._stamp()
        self.loaded_at = time.time()
        self.current: T = load()

    def _stamp(self) -> Stamp:
        try:
            return files_stamp(self.paths)
        except OSError as error:
            message = f"{error.filename}: cannot read the {self.what} file: {error.strerror}"
            raise self._errors[0](message) from None

    def get(self) -> T:
        """Return the value in force, after a look at the files (rate-limited).

        Files that changed are reloaded before returning, or with ``in_background`` in a
        thread of its own while this call returns the value in force.
        """
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.check_interval_s
            if not self.in_background:
                self.reload()
            elif not self._lock.locked() and self._changed():
                self.reloading = threading.Thread(
                    target=self.reload, name=f"reload-{self.what}", daemon=True
                )
                self.reloading.start()
        return self.current

    def _changed(self) -> bool:
        try:
            return self._stamp() not in (self.stamp, self._rejected)
        except self._errors:
            return True  # a missing file: the reload says so

    def reload(self, *, force: bool = False) -> str:
        """Reload if the files changed (always with ``force``); return what happened.

        One of ``"unchanged"``, ``"reloaded"``, ``"rejected"`` (the error is in ``error``).
        """
        if not self._lock.acquire(blocking=force):
            return "unchanged"  # another thread is reloading right now
        try:
            return self._reload(force)
        finally:
            self._lock.release()

    def _reload(self, force: bool) -> str:
        stamp: Stamp | None = None
        try:
            stamp = self._stamp()
            if stamp in (self.stamp, self._rejected) and not force:
                return "unchanged"
            loaded = self._load()
            if self._stamp() != stamp:
                # Written to while it was read: what was read may be half the new file
                # (still valid YAML). The next check loads it once the writer is done.
                return "unchanged"
        except Exception as error:  # a reload must never take the service down
            expected = isinstance(error, self._errors)
            text = str(error) if expected else f"{type(error).__name__}: {error}"
            self._rejected = stamp
            if self.error != text:
                log.error("%s not reloaded, keeping the last good version: %s", self.what, text,
                          exc_info=not expected)  # fmt: skip
            self.error = text
            self._event("rejected")
            return "rejected"
        self.current, self.stamp, self.loaded_at = loaded, stamp, time.time()
        self.error, self._rejected = None, None
        log.info("%s reloaded from %s", self.what, ", ".join(map(str, self.paths)))
        self._event("reloaded")
        return "reloaded"

    def _event(self, result: str) -> None:
        if self._on_reload is not None:
            self._on_reload(result)
