"""The policies file and the catalog, reloaded without a restart when they change (or on demand).

Requests call :meth:`PolicySource.get`; at most once per ``check_interval_s`` that looks at the
files' modification times and sizes, and when one changed reloads both (in a thread of its
own when serving: the request goes on with the version in force), so a new offer and the
lever that names it arrive together. A version that fails validation is not taken: the
last good one stays in force and the error is kept for ``/readyz`` and
``POST /admin/reload``. The first load must succeed (serving refuses to start on an invalid
file, with the error naming the file, the entry and the field).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from features.catalog import Catalog, CatalogError, load_catalog
from features.datafile import Reloadable
from features.policy import Policies, PolicyError, check_offer_ids, load_policies, widen_quiet_hours
from features.scoring import Candidate
from serving.offers import EligibilityCache, OfferPlan, plan_offers


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    """One loaded version of the files, with what serving precomputes from them.

    ``send_policies`` are the policies with the quiet hours widened by the margin, for
    deciding when a message goes out (see :func:`features.policy.widen_quiet_hours`).
    """

    policies: Policies
    catalog: Catalog
    plans: list[OfferPlan]
    eligibility: EligibilityCache
    send_policies: Policies


def load_serving_data(
    policies_path: Path, catalog: Catalog | Path, quiet_margin_min: int = 0
) -> LoadedPolicies:
    """Load and check the policies against the catalog; plan every offer once.

    Raises
    ------
    features.policy.PolicyError, features.catalog.CatalogError
        Naming the file, the entry and the field.

    """
    if not isinstance(catalog, Catalog):
        catalog = load_catalog(catalog)
    candidates = [Candidate.of(o) for o in sorted(catalog.offers.values(), key=lambda o: o.id)]
    policies = load_policies(policies_path)
    check_offer_ids(policies, {c.action_id for c in candidates}, str(policies_path))
    plans = plan_offers(candidates, policies)
    widened = widen_quiet_hours(policies, quiet_margin_min)
    return LoadedPolicies(policies, catalog, plans, EligibilityCache(plans), widened)


class PolicySource(Reloadable[LoadedPolicies]):
    """Hold the policies and catalog in force; swap in a new version when one changes.

    ``catalog`` is a folder (watched) or a loaded :class:`~features.catalog.Catalog`
    (fixed: tests and benchmarks).
    """

    def __init__(
        self,
        path: Path | str,
        catalog: Catalog | Path | str,
        *,
        quiet_margin_min: int = 0,
        check_interval_s: float = 1.0,
        on_reload: Callable[[str], None] | None = None,
        in_background: bool = False,
    ) -> None:
        self.path = Path(path)
        source = catalog if isinstance(catalog, Catalog) else Path(catalog)
        watched = [self.path] if isinstance(source, Catalog) else [self.path, source]
        super().__init__(
            watched,
            lambda: load_serving_data(self.path, source, quiet_margin_min),
            errors=(PolicyError, CatalogError),
            what="policies and catalog",
            check_interval_s=check_interval_s,
            on_reload=on_reload,
            in_background=in_background,
        )
