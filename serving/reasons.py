"""Reason codes in words: the largest positive contributions of a score, for people.

Contribution names are ``kind:detail`` from the heuristic (``affinity:dairy``) or plain
feature names from a model's contributions (``category_affinity_dairy``,
``persona_discount_hunter``, ``open_rate_email``); both read the same.

>>> reasons([("prior:discount", 0.6), ("affinity:dairy", 1.4), ("channel_fit:app", 0.5)])
['buys and browses dairy', 'popular: discount offers', 'made for the app']
>>> reasons([("open_rate_email", 0.2), ("recency_days_all", -0.3)])
['reads email']
"""

from __future__ import annotations

from collections.abc import Iterable

_PERSONA_WORDS = {
    "discount_hunter": "likes a deal",
    "newcomer": "new customer",
    "toucher": "looks in store, buys online",
    "social": "reads push and messenger",
    "procrastinator": "buys at the last minute",
}

# Model feature-name prefixes mapped onto the heuristic's ``kind:`` names.
_PREFIXES = (
    ("category_affinity_", "affinity"),
    ("persona_", "persona"),
    ("open_rate_", "open_rate"),
    ("consent_", "consent"),
)


def _normalize(name: str) -> tuple[str, str]:
    if ":" in name:
        kind, _, detail = name.partition(":")
        return kind, detail
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            return kind, name[len(prefix) :]
    return name, ""


def in_words(name: str) -> str:
    """Return one contribution name in words."""
    kind, detail = _normalize(name)
    readable = detail.replace("_", " ")
    if kind == "affinity":
        return f"buys and browses {readable}"
    if kind == "persona":
        return _PERSONA_WORDS.get(detail, readable)
    if kind == "prior":
        return f"popular: {readable} offers"
    if kind == "channel_fit":
        return f"made for the {detail}" if detail != "store" else "made for this store"
    if kind == "open_rate":
        return f"reads {detail}"
    if kind == "store_fit":
        return "offered in this store"
    return (kind + (" " + readable if readable else "")).replace("_", " ")


def reasons(contributions: Iterable[tuple[str, float]], top: int = 3) -> list[str]:
    """Return the ``top`` largest positive contributions, in words, largest first."""
    positive = sorted((c for c in contributions if c[1] > 0), key=lambda c: (-c[1], c[0]))
    words: list[str] = []
    for name, _value in positive:
        text = in_words(name)
        if text not in words:
            words.append(text)
        if len(words) == top:
            break
    return words


def codes(contributions: Iterable[tuple[str, float]], top: int = 3) -> list[str]:
    """Return the names of the ``top`` largest positive contributions (for the log)."""
    positive = sorted((c for c in contributions if c[1] > 0), key=lambda c: (-c[1], c[0]))
    return [name for name, _ in positive[:top]]
