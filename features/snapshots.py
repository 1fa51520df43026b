"""State a flow snapshots, resumed by a newer version: fields added since get their defaults.

Bytewax snapshots pickle the steps' state. A ``slots`` dataclass pickles its field values;
one unpickled from a snapshot taken before it had its last fields would lack them. Give
such a class ``__setstate__ = with_new_fields`` and those fields take their defaults.

>>> from dataclasses import dataclass, field
>>> @dataclass(slots=True)
... class Old:
...     a: int
...     b: list[int] = field(default_factory=list)
...     __setstate__ = with_new_fields
>>> resumed = Old.__new__(Old)
>>> resumed.__setstate__([1])  # taken when ``Old`` had only ``a``
>>> resumed
Old(a=1, b=[])
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any


def with_new_fields(self: Any, state: Any) -> None:
    """Restore a dataclass from its pickled state; fields it lacks get their defaults.

    The state is the list of field values (a frozen ``slots`` dataclass) or Python's own
    ``(None, {slot: value})`` (an unfrozen one).
    """
    if isinstance(state, tuple):
        named = dict(state[1] or {})
    else:
        named = {f.name: value for f, value in zip(fields(self), state, strict=False)}
    for f in fields(self):
        if f.name in named:
            value = named[f.name]
        elif f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            message = f"cannot resume {type(self).__name__}: field {f.name!r} has no default"
            raise TypeError(message)
        object.__setattr__(self, f.name, value)
