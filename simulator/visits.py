"""Sessions on the web and in the app, and the identity links they produce."""

from __future__ import annotations

from features.catalog import Product
from features.events import Identifiers, IdentityLink, PageView, ProductView
from simulator.state import CustomerState


class Visit:
    """One web or app session: who the site knows the visitor as, before and after login."""

    __slots__ = ("channel", "ids", "member_ids", "session_id", "st")

    def __init__(
        self, st: CustomerState, channel: str, ids: Identifiers, member: Identifiers | None
    ) -> None:
        self.st = st
        self.channel = channel
        self.session_id = st.next_id("se")
        self.ids = ids
        self.member_ids = member

    @property
    def logged_in(self) -> bool:
        """Whether the visitor is known by customer id in this session."""
        return self.ids.customer_id is not None

    def login(self, ts: int) -> None:
        """Log in (if a member): link the anonymous id to the customer id."""
        if self.member_ids is None or self.logged_in:
            return
        self.ids = self.member_ids
        self.st.emit(link(self.st, ts, self.ids, "login", self.channel), ts)


def link(st: CustomerState, ts: int, ids: Identifiers, reason: str, source: str) -> IdentityLink:
    """Return an identity link: the identifiers in ``ids`` are one person."""
    return IdentityLink(
        event_id=st.next_id("ev"),
        event_time=st.at(ts),
        source=source,  # type: ignore[arg-type]
        ids=ids,
        reason=reason,  # type: ignore[arg-type]
    )


def open_visit(st: CustomerState, ts: int, channel: str, device: str | None = None) -> Visit:
    """Start a session: a cookie on the web, a device in the app (linked on first use).

    Members log in to the app once per device (``app_install``); a shared family device
    sees a ``login`` each time someone else picks it up.
    """
    c = st.customer
    rng = st.rng
    if channel == "web":
        cookie = c.cookies[0] if rng.random() < 0.8 else rng.choice(c.cookies)
        member = Identifiers(customer_id=c.customer_id, anonymous_id=cookie) if st.known else None
        return Visit(st, channel, Identifiers(anonymous_id=cookie), member)
    device = device or rng.choice(c.devices)
    if not st.known:
        # Browsing the app before signing up: the device is all the app knows.
        return Visit(st, channel, Identifiers(device_id=device), None)
    ids = Identifiers(customer_id=c.customer_id, device_id=device)
    if device not in st.linked_devices:
        reason = "login" if device in c.shared_devices and device != c.devices[0] else "app_install"
        st.emit(link(st, ts, ids, reason, "app"), ts)
        st.linked_devices.add(device)
    elif device in c.shared_devices:
        # A family device: whoever picks it up logs in again.
        st.emit(link(st, ts, ids, "login", "app"), ts)
    return Visit(st, channel, ids, ids)


def page_view(st: CustomerState, ts: int, visit: Visit, page: str) -> PageView:
    """Return a page view in the visit."""
    return PageView(
        event_id=st.next_id("ev"),
        event_time=st.at(ts),
        source=visit.channel,  # type: ignore[arg-type]
        ids=visit.ids,
        page=page,  # type: ignore[arg-type]
        session_id=visit.session_id,
    )


def product_view(
    st: CustomerState,
    ts: int,
    ids: Identifiers,
    product: Product,
    source: str,
    session_id: str | None,
    store_id: str | None = None,
) -> ProductView:
    """Return a product view: online in a session, or a shelf scan in a store."""
    return ProductView(
        event_id=st.next_id("ev"),
        event_time=st.at(ts),
        source=source,  # type: ignore[arg-type]
        ids=ids,
        product_id=product.id,
        category=product.category,
        price=product.price,
        session_id=session_id,
        store_id=store_id,
    )
