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

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from features.catalog import Catalog, load_catalog
from models.registry import Registry
from models.rows import (
    CHANNEL_FEATURES,
    WORDS,
    ActionContext,
    CustomerView,
    OfferTable,
    channel_matrix,
    channel_row,
    offer_matrix,
)
from models.scoring import Backend, BinaryScorer, Reason, ScoredBatch, load_version

if TYPE_CHECKING:
    from omnioffer.settings import Settings


def _name(reason: Reason, category: str | None, channel: str | None) -> str:
    if reason.feature == "offer_category_affinity" and category:
        return f"affinity:{category}"
    if reason.feature in ("channel_open_rate", "channel_opened_90d") and channel:
        return f"open_rate_{channel}"
    if reason.feature.startswith(("persona_", "open_rate_", "consent_")):
        return reason.feature
    return WORDS.get(reason.feature, reason.feature)


# Offers among the most probable that may get reasons; a page shows a handful.
EXPLAIN_TOP = 6
# Candidate tuples whose offer rows are kept (one per eligibility context in use).
_ROWS_MEMO = 256


class ModelScored:
    """A candidate's calibrated probability; its strongest contributions on first use.

    Contributions are LightGBM ``pred_contrib`` values, the costly part of scoring, so
    they are computed only for the candidates whose reasons someone reads (see
    :class:`ModelScores`).
    """

    __slots__ = ("_index", "_scores", "probability")

    def __init__(self, probability: float, scores: ModelScores, index: int) -> None:
        self.probability = probability
        self._scores = scores
        self._index = index

    @property
    def contributions(self) -> tuple[tuple[str, float], ...]:
        """``(name, log-odds)`` pairs, largest first by absolute value."""
        return self._scores.contributions(self._index)

    def __repr__(self) -> str:
        return f"ModelScored(probability={self.probability!r}, index={self._index})"


class ModelScores(Sequence[ModelScored]):
    """One request's scores, in candidate order (what :meth:`RegistryScorer.score` returns).

    ``probabilities`` are ready; contributions are computed when first read, or for
    several candidates in one model call with :meth:`explain` (serving explains the
    offers it shows). A candidate gets contributions exactly when the eager scorer gave
    it some (the :data:`EXPLAIN_TOP` most probable offers; every channel), so answers
    are the same, only cheaper.
    """

    __slots__ = ("_batch", "_contributions", "_key", "probabilities")

    def __init__(self, batch: ScoredBatch,
                 key: Callable[[int], tuple[str | None, str | None]]) -> None:  # fmt: skip
        self._batch = batch
        self._key = key  # (category, channel) of a candidate, for naming its reasons
        self._contributions: dict[int, tuple[tuple[str, float], ...]] = {}
        self.probabilities = batch.probabilities

    def __len__(self) -> int:
        return len(self.probabilities)

    @overload
    def __getitem__(self, i: int) -> ModelScored: ...
    @overload
    def __getitem__(self, i: slice) -> list[ModelScored]: ...
    def __getitem__(self, i: int | slice) -> ModelScored | list[ModelScored]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        return ModelScored(self.probabilities[i], self, i)

    def explain(self, indices: Iterable[int]) -> None:
        """Compute the contributions of these candidates now, in one model call."""
        self._batch.explain(indices)

    def contributions(self, i: int) -> tuple[tuple[str, float], ...]:
        """Return candidate ``i``'s named contributions (computed now if need be)."""
        found = self._contributions.get(i)
        if found is None:
            reasons = self._batch.reasons(i)
            key = self._key(i) if reasons else (None, None)
            found = tuple((_name(r, *key), r.contribution) for r in reasons)
            self._contributions[i] = found
        return found


class RegistryScorer:
    """Both models of one registry version behind serving's scorer shape."""

    def __init__(self, version: str, nbo: BinaryScorer, channel: BinaryScorer,
                 offers: OfferTable, top_features: int = 3) -> None:
        self.version = version
        self.nbo = nbo
        self.channel = channel
        self.offers = offers
        self.top_features = top_features
        # Channel rows go straight into a matrix when the model's columns are the rows' own
        # (always so for models trained here); any other order goes through named rows.
        self._channel_direct = tuple(channel.feature_names) == CHANNEL_FEATURES
        self._rows: dict[int, tuple[tuple[Any, ...], OfferTable, list[str], np.ndarray]] = {}
        self._catalog: Catalog | None = None

    def use_catalog(self, catalog: Catalog) -> None:
        """Take offers' and stores' facts from ``catalog`` from now on (serving reloaded it).

        Cheap when it is the catalog already in use (one identity check per request).
        """
        if catalog is not self._catalog:
            self.offers = OfferTable.from_catalog(catalog)  # one assignment: atomic
            self._catalog = catalog

    def _offer_rows(self, candidates: Sequence[Any]) -> tuple[OfferTable, list[str], np.ndarray]:
        """Return the offer table, the candidates' offer ids and their rows in the table.

        Serving passes the same tuple of candidates for every request of an eligibility
        context: a tuple cannot change, so its ids and rows are kept (by identity, the
        tuple held so its id is not reused) while the table stays the same.
        """
        memo = self._rows.get(id(candidates))
        if memo is not None and memo[0] is candidates and memo[1] is self.offers:
            return memo[1], memo[2], memo[3]
        offer_ids = [c.offer.id for c in candidates]
        known = self.offers.offers
        if not all(map(known.__contains__, offer_ids)):
            # Serving's catalog is the truth: offers added since the model was loaded
            # (or a catalog other than the one at load) are scored from their attributes.
            self.offers = self.offers.with_offers(
                [c.offer for c in candidates if c.offer.id not in known]
            )
        offers = self.offers
        at = offers.columns.positions(offer_ids)
        if isinstance(candidates, tuple):
            if len(self._rows) >= _ROWS_MEMO:
                self._rows.clear()
            self._rows[id(candidates)] = (candidates, offers, offer_ids, at)
        return offers, offer_ids, at

    def score(self, features: Mapping[str, Any] | None, candidates: Sequence[Any],
              context: Any) -> ModelScores | list[ModelScored]:
        """Score the candidates of one request, in the order given."""
        if not candidates:
            return []
        view = CustomerView.from_features(features)
        at = getattr(context, "now", None) or datetime.now(UTC)
        ctx = ActionContext(at=at, surface=context.surface, page=getattr(context, "page", None),
                            store_id=getattr(context, "store_id", None))
        if context.surface == "offers":
            offers, offer_ids, at = self._offer_rows(candidates)
            sales = getattr(context, "channel", None) or "web"
            # Rows straight into a matrix; explaining (pred_contrib) costs far more than
            # predicting, so only the most probable candidates may get reasons, and only
            # those someone reads do (serving: the offers it shows).
            batch = self.nbo.score_batch(
                offer_matrix(view, offers, offer_ids, sales, ctx, at),
                top_features=self.top_features,
                explain_top=EXPLAIN_TOP,
            )
            return ModelScores(batch, lambda i: (offers.offer(offer_ids[i]).category, sales))
        channels = [c.channel for c in candidates]
        if self._channel_direct:
            x = channel_matrix(view, channels, ctx)
        else:
            x = self.channel.matrix([channel_row(view, c, ctx) for c in channels])
        batch = self.channel.score_batch(x, top_features=self.top_features)
        return ModelScores(batch, lambda i: (None, channels[i]))


def load_scorer(target: str, registry_dir: Path | str | None = None,
                backend: Backend | None = None, settings: Settings | None = None,
                ) -> RegistryScorer:  # fmt: skip
    """Load the version named by the pointer's content (``v0003``) or a version folder.

    A version name is looked up in ``registry_dir``, else in the settings' registry (the
    folder of the promoted pointer, unless ``OMNIOFFER_REGISTRY_DIR`` says otherwise).
    """
    if settings is None:
        from omnioffer.settings import Settings

        settings = Settings()
    path = Path(target)
    if path.is_dir():
        registry_dir, version = path.parent.parent, path.name
    else:
        registry_dir, version = registry_dir or settings.model_registry_dir, target.strip()
    Registry(registry_dir).path(version)
    catalog = load_catalog(settings.catalog_dir) if settings.catalog_dir else load_catalog()
    _, nbo, channel = load_version(
        registry_dir, version, backend or settings.scorer_backend, settings.reasons
    )
    return RegistryScorer(version, nbo, channel, OfferTable.from_catalog(catalog))
