"""Offer budget spend: redemptions counted by the feature flow, refreshed off the request path.

An offer with a ``budget`` (catalog) is spent by its redemptions: each order that redeemed
it costs the offer's ``cost``, until a refund voids that redemption. The feature flow
records redemptions and voids in the online store
(:meth:`features.store.OnlineStore.redemptions`: distinct orders, so replays do not count
twice, and a void holds whichever of the two arrives first); :class:`BudgetSpend` reads
their counts every ``refresh_s`` seconds in a thread of its own, and requests add that to
the policies' ``budget_spent`` (spend the flow never saw: before go-live, or booked
elsewhere). An offer whose spend plus one more redemption would pass its budget stops
being eligible (``serving.eligibility``, rule ``budget``) within one refresh. A store that
cannot be read keeps the last spend known, counted in the metrics.

What it does not do: an order id must be unique across channels and stores; a budget can be
passed by what redeems within the flow's lag plus one refresh; and a server that starts
while the store is down serves with the policies' spend alone until its first read (it
fails open, like the rest of serving; ``omnioffer_serve_budget_refreshes_total``).

>>> from features.catalog import load_catalog
>>> from features.store import Redemption, StoreBatch, open_store
>>> catalog = load_catalog()
>>> with open_store("sqlite", sqlite_path=":memory:") as store:
...     budgeted = next(o for o in catalog.offers.values() if o.budget is not None)
...     store.write(StoreBatch(redemptions=[Redemption(budgeted.id, "o-1")]))
...     spend = BudgetSpend(store, catalog.offers.values())
...     spend.refresh()
...     spend.spent({})[budgeted.id] == budgeted.cost
True
True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from features.catalog import Catalog, Offer
from features.store import OnlineStore, StoreError
from serving.periodic import Periodic

log = logging.getLogger(__name__)

_Spend = Mapping[str, float]


class BudgetSpend:
    """The spend of every budgeted offer, as last read from the store.

    :meth:`spent` never touches the store. It returns the same mapping object for as long
    as neither the base spend nor the live one changes, so a cache of eligibility can tell
    by identity when to look again (:class:`serving.offers.EligibilityCache`).
    """

    def __init__(
        self,
        store: OnlineStore,
        offers: Iterable[Offer],
        *,
        refresh_s: float = 1.0,
        on_refresh: Callable[[str, _Spend], None] | None = None,
    ) -> None:
        self.store = store
        self._costs = self._budgeted(offers)
        self._catalog: Catalog | None = None
        self._live: dict[str, float] = {}
        self._failing = False
        self._memo: tuple[_Spend, _Spend, _Spend] | None = None
        self._on_refresh = on_refresh
        self._poller = Periodic(self.refresh, interval_s=refresh_s, name="budget-spend")

    @staticmethod
    def _budgeted(offers: Iterable[Offer]) -> dict[str, float]:
        budgeted = sorted((o for o in offers if o.budget is not None), key=lambda o: o.id)
        return {o.id: o.cost for o in budgeted}

    def track(self, catalog: Catalog) -> None:
        """Follow the budgeted offers of ``catalog`` from the next refresh on (a reload)."""
        if catalog is not self._catalog:
            self._catalog = catalog
            self._costs = self._budgeted(catalog.offers.values())

    @property
    def live(self) -> _Spend:
        """Spend from redemptions per budgeted offer (offers without any are absent)."""
        return self._live

    def refresh(self) -> bool:
        """Read the redemption counts once; return whether the store answered."""
        costs = self._costs  # one version for the whole refresh, whatever a reload does
        if not costs:
            return True
        try:
            counts = self.store.redemptions(list(costs))
        except StoreError as error:
            if not self._failing:  # once per outage, not every second
                log.warning("budget spend not refreshed (the last one stays): %s", error)
            self._failing = True
            self._report("failure")
            return False
        if self._failing:
            log.info("budget spend refreshed again")
        self._failing = False
        live = {o: counts[o] * cost for o, cost in costs.items() if counts.get(o)}
        if live != self._live:
            self._live = live  # one reference assignment: requests see old or new
        self._report("ok")
        return True

    def _report(self, result: str) -> None:
        if self._on_refresh is not None:
            self._on_refresh(result, self._live)

    def spent(self, base: _Spend) -> _Spend:
        """Return ``base`` plus the live spend (the same object while neither changes)."""
        live, memo = self._live, self._memo
        if memo is not None and memo[0] is base and memo[1] is live:
            return memo[2]
        if live:
            total = dict(base)
            for offer_id, amount in live.items():
                total[offer_id] = total.get(offer_id, 0.0) + amount
        else:
            total = base
        self._memo = (base, live, total)
        return total

    def start(self) -> None:
        """Refresh now, then every ``refresh_s`` seconds until :meth:`stop`."""
        self._poller.start()

    def stop(self) -> None:
        """Stop refreshing; idempotent."""
        self._poller.stop()
