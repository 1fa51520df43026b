"""The scorer serving plugs in: ``load_scorer(target)`` -> an object with ``version`` and ``score``.

It follows ``features.scoring.Scorer`` by shape (``models/`` imports nothing from
``serving/``): ``score(features, candidates, context)`` takes the output of
:func:`features.profile.profile_features` (or ``None``), candidates with an ``offer``
(on-site offers) or a ``channel`` (messages), and a context with ``surface``, ``channel``,
``page``, ``store_id`` and ``now``; it returns one result per candidate, in order, with
``probability`` and ``contributions`` as ``(name, log-odds)`` pairs, names in serving's
``kind:detail`` convention where one exists (``affinity:dairy``, ``open_rate_email``) and
in words otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.catalog import load_catalog
from models.registry import Registry
from models.rows import (
    WORDS,
    ActionContext,
    CustomerView,
    OfferTable,
    candidate_matrix,
    channel_row,
)
from models.scoring import Backend, BinaryScorer, Reason, load_version


@dataclass(frozen=True, slots=True)
class ModelScored:
    """A candidate's calibrated probability and its strongest contributions."""

    probability: float
    contributions: tuple[tuple[str, float], ...] = ()


def _name(reason: Reason, category: str | None, channel: str | None) -> str:
    if reason.feature == "offer_category_affinity" and category:
        return f"affinity:{category}"
    if reason.feature in ("channel_open_rate", "channel_opened_90d") and channel:
        return f"open_rate_{channel}"
    if reason.feature.startswith(("persona_", "open_rate_", "consent_")):
        return reason.feature
    return WORDS.get(reason.feature, reason.feature)


# Offers among the most probable that get reasons; a page shows a handful.
EXPLAIN_TOP = 6


class RegistryScorer:
    """Both models of one registry version behind serving's scorer shape."""

    def __init__(self, version: str, nbo: BinaryScorer, channel: BinaryScorer,
                 offers: OfferTable, top_features: int = 3) -> None:
        self.version = version
        self.nbo = nbo
        self.channel = channel
        self.offers = offers
        self.top_features = top_features

    def score(self, features: Mapping[str, Any] | None, candidates: Sequence[Any],
              context: Any) -> list[ModelScored]:
        """Score the candidates of one request, in the order given."""
        if not candidates:
            return []
        view = CustomerView.from_features(features)
        at = getattr(context, "now", None) or datetime.now(UTC)
        ctx = ActionContext(at=at, surface=context.surface, page=getattr(context, "page", None),
                            store_id=getattr(context, "store_id", None))
        if context.surface == "offers":
            unknown = [c.offer for c in candidates if c.offer.id not in self.offers.offers]
            if unknown:
                # Serving's catalog is the truth: offers added since the model was loaded
                # (or a catalog other than the one at load) are scored from their attributes.
                self.offers = self.offers.with_offers(unknown)
            sales = getattr(context, "channel", None) or "web"
            actions = [(c.offer.id, sales) for c in candidates]
            # Rows straight into a matrix; explaining (pred_contrib) costs far more than
            # predicting, so only the most probable candidates get reasons.
            scored = self.nbo.score_matrix(
                candidate_matrix(view, self.offers, actions, ctx),
                top_features=self.top_features,
                explain_top=EXPLAIN_TOP,
            )
            keys = [(self.offers.offer(c.offer.id).category, sales) for c in candidates]
        else:
            rows = [channel_row(view, c.channel, ctx) for c in candidates]
            scored = self.channel.score(rows, top_features=self.top_features)
            keys = [(None, c.channel) for c in candidates]
        return [
            ModelScored(s.probability, tuple((_name(r, *key), r.contribution) for r in s.reasons))
            for s, key in zip(scored, keys, strict=True)
        ]


def load_scorer(target: str, registry_dir: Path | str | None = None,
                backend: Backend | None = None) -> RegistryScorer:
    """Load the version named by the pointer's content (``v0003``) or a version folder."""
    from omnioffer.settings import Settings

    settings = Settings()
    path = Path(target)
    if path.is_dir():
        registry_dir, version = path.parent.parent, path.name
    else:
        registry_dir, version = registry_dir or settings.model_registry_dir, target.strip()
    Registry(registry_dir).path(version)
    catalog = load_catalog(settings.catalog_dir) if settings.catalog_dir else load_catalog()
    _, nbo, channel = load_version(registry_dir, version, backend or settings.scorer_backend)
    return RegistryScorer(version, nbo, channel, OfferTable.from_catalog(catalog))
