"""A mixin for resources used as context managers that close on exit."""

from __future__ import annotations

from typing import Self


class Closing:
    """Close on leaving a ``with`` block; subclasses implement :meth:`close`.

    >>> class Thing(Closing):
    ...     closed = False
    ...     def close(self) -> None:
    ...         self.closed = True
    >>> with Thing() as thing:
    ...     pass
    >>> thing.closed
    True
    """

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        """Return the object itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the object."""
        self.close()
