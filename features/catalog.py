"""The catalog as data: offers, stores, products, categories and messaging channels.

Marketers edit YAML (or JSON) files; :func:`load_catalog` validates them on load and every
error names the file, the entry and the field. The default set ships in
``features/data/catalog``.

>>> catalog = load_catalog()
>>> len(catalog.offers) > 0, catalog.store("st-001").format in STORE_FORMATS
(True, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from features.events import AwareTime, Id, MessageChannel, SalesChannel, Tier

DEFAULT_CATALOG_DIR = Path(__file__).parent / "data" / "catalog"

OfferKind = Literal["discount", "bonus_points", "free_delivery", "cross_sell"]
StoreFormat = Literal["hypermarket", "supermarket", "convenience"]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

STORE_FORMATS: tuple[str, ...] = get_args(StoreFormat)
TIERS: tuple[str, ...] = get_args(Tier)
WEEKDAYS: tuple[str, ...] = get_args(Weekday)

_HOURS_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$"
_HOURS_REGEX = re.compile(r"Expected `str` matching regex '.*'")
HoursRange = Annotated[str, msgspec.Meta(pattern=_HOURS_PATTERN)]


class CatalogError(ValueError):
    """A catalog file is invalid; the message names the file, entry and field."""


class Category(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A product category, e.g. ``dairy``."""

    id: Id
    name: str


class Product(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A sellable product with its shelf price."""

    id: Id
    name: str
    category: Id
    price: Annotated[float, msgspec.Meta(gt=0)]


class Store(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A physical store; its attributes drive store-format offer limits."""

    id: Id
    name: str
    format: StoreFormat
    region: str
    timezone: str
    opening_hours: dict[Weekday, HoursRange]
    coffee_corner: bool = False

    def opens_at(self, weekday: int) -> tuple[time, time] | None:
        """Return (open, close) local times for ``weekday`` (0 = Monday), or ``None`` if shut."""
        span = self.opening_hours.get(WEEKDAYS[weekday])  # type: ignore[call-overload]
        if span is None:
            return None
        start, end = span.split("-")
        close = time(23, 59, 59) if end == "24:00" else time.fromisoformat(end)
        return time.fromisoformat(start), close


class Offer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A promotion and the limits on where, when and to whom it may be shown.

    ``value`` is a percentage for discounts, points for bonus points, a currency amount for
    free delivery and cross-sell; ``cost`` is the expected cost of one redemption. Empty
    ``sales_channels`` / ``store_formats`` / ``tiers`` mean no limit.
    """

    id: Id
    name: str
    kind: OfferKind
    value: Annotated[float, msgspec.Meta(ge=0)]
    cost: Annotated[float, msgspec.Meta(ge=0)]
    valid_from: AwareTime
    valid_to: AwareTime
    category: Id | None = None
    sales_channels: list[SalesChannel] = []
    store_formats: list[StoreFormat] = []
    requires_coffee_corner: bool = False
    tiers: list[Tier] = []
    budget: Annotated[float, msgspec.Meta(ge=0)] | None = None
    min_basket: Annotated[float, msgspec.Meta(ge=0)] = 0.0

    def valid_at(self, when: datetime) -> bool:
        """Return whether the offer's validity window contains ``when``."""
        return self.valid_from <= when < self.valid_to


class ChannelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A messaging channel: its cost, whether quiet hours apply, whether it needs an opt-in.

    ``opt_in_required``: even a transactional message needs an explicit opt-in (push: no
    permission given in the app, no token to send to).
    """

    id: MessageChannel
    cost: Annotated[float, msgspec.Meta(ge=0)]
    quiet_hours_apply: bool = True
    opt_in_required: bool = False


@dataclass(frozen=True)
class Catalog:
    """Everything the catalog files describe, indexed by id."""

    categories: dict[str, Category]
    products: dict[str, Product]
    stores: dict[str, Store]
    offers: dict[str, Offer]
    channels: dict[str, ChannelSpec]

    def store(self, store_id: str) -> Store:
        """Return a store by id; ``KeyError`` names the id when unknown."""
        return self.stores[store_id]

    def products_in(self, category: str) -> list[Product]:
        """Return the products of a category, in id order."""
        return [p for p in self.products.values() if p.category == category]


_FILES: dict[str, type[msgspec.Struct]] = {
    "categories": Category,
    "products": Product,
    "stores": Store,
    "offers": Offer,
    "channels": ChannelSpec,
}


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = f"{path}: catalog file is missing"
        raise CatalogError(message) from None
    try:
        if path.suffix in {".yaml", ".yml"}:
            return yaml.safe_load(text)
        return msgspec.json.decode(text)
    except (yaml.YAMLError, msgspec.DecodeError) as error:
        message = f"{path}: cannot be parsed: {error}"
        raise CatalogError(message) from None


def _find(directory: Path, name: str) -> Path:
    for suffix in (".yaml", ".yml", ".json"):
        if (path := directory / f"{name}{suffix}").exists():
            return path
    return directory / f"{name}.yaml"


def _entries(path: Path, struct: type[msgspec.Struct]) -> dict[str, Any]:
    document = _read(path)
    if not isinstance(document, list):
        message = f"{path}: expected a list of entries; got {type(document).__name__}"
        raise CatalogError(message)
    entries: dict[str, Any] = {}
    for position, raw in enumerate(document):
        label = f"entry #{position}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label = f"entry '{raw['id']}' (#{position})"
        try:
            entry = msgspec.convert(raw, struct, strict=False)
        except msgspec.ValidationError as error:
            text = str(error)
            field = text.rsplit("at `$.", 1)[-1].rstrip("`") if "at `$." in text else ""
            where = f", field '{field}'" if field else ""
            problem = _HOURS_REGEX.sub("expected 'HH:MM-HH:MM'", text.split(" - at ")[0])
            message = f"{path}: {label}{where}: {problem}"
            raise CatalogError(message) from None
        if entry.id in entries:  # type: ignore[attr-defined]
            message = f"{path}: {label}: duplicate id"
            raise CatalogError(message)
        entries[entry.id] = entry  # type: ignore[attr-defined]
    return entries


def _check_references(directory: Path, catalog: Catalog) -> None:
    def fail(name: str, entry_id: str, field: str, problem: str) -> None:
        message = f"{_find(directory, name)}: entry '{entry_id}', field '{field}': {problem}"
        raise CatalogError(message)

    for product in catalog.products.values():
        if product.category not in catalog.categories:
            fail("products", product.id, "category", f"unknown category '{product.category}'")
    for store in catalog.stores.values():
        try:
            ZoneInfo(store.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            fail("stores", store.id, "timezone", f"unknown time zone '{store.timezone}'")
    for offer in catalog.offers.values():
        if offer.category is not None and offer.category not in catalog.categories:
            fail("offers", offer.id, "category", f"unknown category '{offer.category}'")
        if offer.valid_to <= offer.valid_from:
            fail("offers", offer.id, "valid_to", "must be after 'valid_from'")
        if offer.kind == "discount" and offer.value > 100:
            fail("offers", offer.id, "value", f"a discount is a percentage; got {offer.value}")
        if (offer.store_formats or offer.requires_coffee_corner) and offer.sales_channels and (
            "store" not in offer.sales_channels
        ):
            fail("offers", offer.id, "store_formats", "store limits on an offer not sold in stores")


def load_catalog(directory: Path | str = DEFAULT_CATALOG_DIR) -> Catalog:
    """Load and validate every catalog file in ``directory``.

    Raises
    ------
    CatalogError
        With the file, the entry and the field that is wrong.

    """
    directory = Path(directory)
    parts = {name: _entries(_find(directory, name), struct) for name, struct in _FILES.items()}
    catalog = Catalog(**parts)
    _check_references(directory, catalog)
    return catalog
