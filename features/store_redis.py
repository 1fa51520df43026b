"""The production online store on Redis (>= 6.2: ``SET … GET``, ``GETDEL``).

Same contract as :class:`features.store.OnlineStore`.

Key layout (``ns`` is the namespace, ``omni`` by default; ``P`` a profile id, ``X`` an
identifier). Every key of one profile carries the hash tag ``{P}``, so a profile's keys
share one Redis Cluster slot and a Lua script may touch several of them::

    ns:{P}:p          STRING  the profile value; read with ONE GET
    ns:{P}:ids        SET     identifiers written for P: the erasure index
    ns:{P}:merges     HASH    merge_id -> MergeRecord JSON (the merge log; sorted on read)
    ns:{P}:contacts   ZSET    decision_id, scored by sent_at in µs since the epoch
    ns:{P}:crec       HASH    decision_id -> ContactRecord JSON
    ns:id:{X}         STRING  the profile id X maps to (its own slot, found by MGET)
    ns:offer:{O}:redeemed  SET  order ids whose redemption of offer O stands (spend; SCARD)
    ns:offer:{O}:voided    SET  order ids a refund voided for offer O (kept out of the above)

The contact log is a sorted set of ids plus a hash of records, rather than a sorted set
of encoded records, so that a record is keyed by its decision id: rewriting it replaces
it instead of adding a near-duplicate member.

TTL policy: no key expires by default. With ``profile_ttl_s``, ``ns:{P}:p`` gets a TTL
(``SET … PX``, in the same pipeline) refreshed by every write; the identity map and the
logs never expire. Contact records more than ``contact_retention_days`` (90) older than
the newest record of the same profile are trimmed by the script that writes contacts.

The identity index is exact when one writer owns an identifier at a time (see the
contract); if a writer dies between the two round trips of a re-mapping, the old
profile's index keeps an extra entry. Readers tolerate that: :meth:`RedisStore.erase`
and :meth:`RedisStore.identifiers_of` check every indexed identifier still points to
the profile before acting on it.

Against an unreachable server every call fails within about ``(retries + 1) *
socket_timeout`` (loopback refusals are immediate) with
:class:`~features.store.StoreUnavailableError`, so serving can degrade instead of wait.

Redis Cluster (``cluster=True``, setting ``OMNIOFFER_REDIS_CLUSTER``): the URL names any
one node and the client finds the rest. The layout above already keeps every script and
multi-key command inside one slot; the reads that span slots (identity keys, several
profiles) go through redis-py's cluster pipeline, which groups them by node. The cluster
client connects on first use, so a store opened while the cluster is down fails its
calls (and serving degrades) rather than its construction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import ClusterDownError, RedisClusterException, SlotNotCoveredError
from redis.retry import Retry

from features.closing import Closing
from features.store import (
    DEFAULT_CONTACT_RETENTION_DAYS,
    ContactRecord,
    ErasureReport,
    MergeRecord,
    ProfileRead,
    StoreBatch,
    StoreError,
    StoreUnavailableError,
    check_aware,
    check_batch,
    check_id,
    check_ttl,
    contact_order,
    decode_contact,
    decode_merge,
    encode_record,
    epoch_us,
    last_identity,
    merge_order,
    retention_us,
)

__all__ = ["RedisStore"]

# Write contacts of ONE profile and trim by event time. KEYS: the zset, the hash (same
# slot: one hash tag). ARGV[1]: retention in µs ('' keeps all); ARGV[2], ARGV[3]: a guard,
# write nothing and return nil unless the log holds ARGV[3] records scored ARGV[2] or more
# ('' '': none); then triples of decision_id, sent_at µs, record. Returns the ids written.
# A script, because the trim reads the newest score and deletes by it (and the guard counts
# before writing): as separate commands a concurrent write could slip in between.
# string.format('%.0f') keeps all digits of a µs timestamp (Lua's default is %.14g).
_ADD_CONTACTS = """
if ARGV[2] ~= '' and redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf') ~= tonumber(ARGV[3]) then
  return false
end
local written = {}
for i = 4, #ARGV, 3 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 2])
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  written[#written + 1] = ARGV[i]
end
if ARGV[1] == '' then return written end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if not newest then return written end
local cutoff = '(' .. string.format('%.0f', tonumber(newest) - tonumber(ARGV[1]))
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
for _, id in ipairs(old) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
return written
"""

# Contacts from a score on, in one round trip. KEYS: the zset, the hash. ARGV[1]: min.
_READ_CONTACTS = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
local out = {}
for i, id in ipairs(ids) do out[i] = redis.call('HGET', KEYS[2], id) end
return out
"""

# Redemptions or voids of ONE offer. KEYS: its redeemed and voided sets (one hash tag).
# ARGV[1]: '1' for voids; then order ids. A void wins whichever comes first: a script, so
# a redemption's check of the voided set and its add cannot be split by a void between.
_REDEEM = """
local void = ARGV[1] == '1'
for i = 2, #ARGV do
  if void then
    redis.call('SADD', KEYS[2], ARGV[i])
    redis.call('SREM', KEYS[1], ARGV[i])
  elseif redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    redis.call('SADD', KEYS[1], ARGV[i])
  end
end
return #ARGV - 1
"""

# Delete an identity key only if it still maps to the profile being erased, so an
# erasure never drops an identifier that has since moved to another profile.
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore(Closing):
    """The online store on Redis; see :class:`features.store.OnlineStore`.

    Parameters
    ----------
    url
        ``redis://host:port/db`` (``rediss://`` for TLS; a password in the URL works).
    namespace
        Prefix of every key, so tests and benchmarks can share a server; no braces.
    socket_timeout, connect_timeout
        Seconds per read / per connect. The defaults (0.1 s) suit serving on the same
        network, where a GET takes well under a millisecond; the flow, which writes
        large batches and prefers waiting to failing, should pass about 2 s.
    retries
        Immediate retries after a connection error (not after a timeout, which would
        double the wait). One retry lets a call ride over a server restart, which
        leaves stale pooled connections; writes are idempotent, so a retried pipeline
        is safe.
    profile_ttl_s
        Seconds after its last write that a profile value expires; ``None``: never.
    contact_retention_days
        Contact records this much older than the newest one of the same profile are
        trimmed on write; ``None`` keeps them all.
    cluster
        ``url`` is a node of a Redis Cluster (see the module notes).

    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "omni",
        socket_timeout: float = 0.1,
        connect_timeout: float = 0.1,
        retries: int = 1,
        profile_ttl_s: float | None = None,
        contact_retention_days: float | None = DEFAULT_CONTACT_RETENTION_DAYS,
        cluster: bool = False,
    ) -> None:
        if not namespace or "{" in namespace or "}" in namespace:
            # A brace in the prefix would become the hash tag and break slot sharing.
            msg = f"namespace must be non-empty and without braces; got {namespace!r}"
            raise ValueError(msg)
        if retries < 0:
            msg = f"retries must be >= 0; got {retries!r}"
            raise ValueError(msg)
        check_ttl(profile_ttl_s)
        self.namespace = namespace
        self.profile_ttl_s = profile_ttl_s
        self._ttl_ms = None if profile_ttl_s is None else max(1, round(profile_ttl_s * 1000))
        self._retention = retention_us(contact_retention_days)
        self.cluster = cluster
        self._url = url
        # redis-py 8 retries 3 times with backoff by default: seconds against a dead
        # server. Spell the policy out instead.
        self._options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), retries, supported_errors=(redis.ConnectionError,)),
            "decode_responses": False,
        }
        self._connect_lock = threading.Lock()
        self._made: Any = None
        self._hot = _HotConnections(retries)
        if not cluster:  # connects lazily by itself
            self._made = redis.Redis.from_url(url, **self._options)
        # Only the SHAs: EVALSHA loads a script on NOSCRIPT (write and erase redo those).
        self._add_contacts = Script(self._made, _ADD_CONTACTS.encode())
        self._read_contacts = Script(self._made, _READ_CONTACTS.encode())
        self._delete_if = Script(self._made, _DELETE_IF.encode())
        self._redeem = Script(self._made, _REDEEM.encode())

    @property
    def _client(self) -> Any:
        """The redis-py client: ``Redis``, or ``RedisCluster`` made on first use."""
        client = self._made
        if client is None:
            with self._connect_lock:
                if self._made is None:
                    try:
                        self._made = RedisCluster.from_url(self._url, **self._options)
                    except (RedisClusterException, redis.RedisError) as exc:
                        # Not made: the next call tries again, which is how a store opened
                        # while the cluster is down starts working once it is up.
                        where = f"redis cluster at {self._where()}"
                        if _unreachable(exc):
                            msg = f"{where}: unreachable: {exc}"
                            raise StoreUnavailableError(msg) from exc
                        msg = f"{where}: {exc}"
                        raise StoreError(msg) from exc
                client = self._made
        return client

    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return script(keys=keys, args=args, client=self._client)

    def _multi_get(self, keys: list[str]) -> list[bytes | None]:
        """``MGET`` on one server; on a cluster, one ``GET`` per key grouped by node."""
        if not self.cluster:
            values: list[bytes | None] = self._client.mget(keys)
            return values
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return list(pipe.execute())

    # --- keys -------------------------------------------------------------------------

    def profile_key(self, profile_id: str) -> str:
        """Return the key of the profile's value (``ns:{P}:p``)."""
        return f"{self.namespace}:{{{profile_id}}}:p"

    def identity_key(self, identifier: str) -> str:
        """Return the key of an identifier's mapping (``ns:id:{X}``)."""
        return f"{self.namespace}:id:{{{identifier}}}"

    def redeemed_key(self, offer_id: str, part: str = "redeemed") -> str:
        """Return the key of the set of orders that redeemed ``offer_id`` (or ``voided``)."""
        return f"{self.namespace}:offer:{{{offer_id}}}:{part}"

    def _key(self, profile_id: str, part: str) -> str:
        return f"{self.namespace}:{{{profile_id}}}:{part}"

    # --- writes -----------------------------------------------------------------------

    def write(self, batch: StoreBatch) -> None:
        """Apply ``batch`` with one pipeline (``transaction=False``), plus index repair.

        Identity re-mapping: ``SET ns:id:{X} B GET`` returns the old owner A in the
        same round trip; a second round trip (only if some owner changed) removes X
        from A's index. Not one Lua script: ``ns:id:{X}``, ``ns:{A}:ids`` and
        ``ns:{B}:ids`` live in three slots, which a cluster refuses in one script or
        MULTI. B's index gets X *before* the mapping is set, so a crash in between can
        only leave an extra index entry (harmless, readers verify), never a mapping
        that erasure cannot find. One connection keeps that order within a pipeline; a
        cluster's pipeline writes to every node before it reads a reply, so there the
        index entries go first, in a round trip of their own.
        """
        check_batch(batch)
        pipe = self._client.pipeline(transaction=False)
        indexing = self._client.pipeline(transaction=False) if self.cluster else pipe
        for profile in batch.profiles:
            pipe.set(self.profile_key(profile.profile_id), profile.value, px=self._ttl_ms)
        for profile_id in batch.deleted_profiles:
            pipe.delete(self.profile_key(profile_id))

        # Position in the pipeline -> (identifier, new owner): the replies are old owners.
        moves: dict[int, tuple[str, str | None]] = {}
        for identifier, profile_id in last_identity(batch.identity).items():
            key = self.identity_key(identifier)
            if profile_id is None:
                pipe.getdel(key)
            else:
                indexing.sadd(self._key(profile_id, "ids"), identifier)
                pipe.set(key, profile_id, get=True)
            moves[len(pipe) - 1] = (identifier, profile_id)

        merges: dict[str, dict[str, bytes]] = {}
        for merge in batch.merges:
            merges.setdefault(merge.into_profile, {})[merge.merge_id] = encode_record(merge)
        for profile_id, records in merges.items():
            pipe.hset(self._key(profile_id, "merges"), mapping=records)

        scripted: dict[int, tuple[Script, list[str], list[Any]]] = {}

        def script(call: Script, keys: list[str], args: list[Any]) -> None:
            pipe.execute_command("EVALSHA", call.sha, len(keys), *keys, *args)
            scripted[len(pipe) - 1] = (call, keys, args)

        redeemed: dict[tuple[str, bool], set[str]] = {}
        for r in batch.redemptions:
            redeemed.setdefault((r.offer_id, r.void), set()).add(r.order_id)
        for (offer_id, void), orders in sorted(redeemed.items()):
            keys = [self.redeemed_key(offer_id), self.redeemed_key(offer_id, "voided")]
            script(self._redeem, keys, ["1" if void else "0", *sorted(orders)])
        for keys, args in self._contact_calls(batch.contacts):
            script(self._add_contacts, keys, args)
        dropped: dict[str, list[str]] = {}
        for drop in batch.dropped_contacts:
            dropped.setdefault(drop.profile_id, []).append(drop.decision_id)
        for profile_id, decision_ids in dropped.items():
            pipe.zrem(self._key(profile_id, "contacts"), *decision_ids)
            pipe.hdel(self._key(profile_id, "crec"), *decision_ids)

        with _mapped_errors("write"):
            if indexing is not pipe and len(indexing):
                _raise_first_error(indexing.execute(raise_on_error=False), "write")
            replies = pipe.execute(raise_on_error=False) if len(pipe) else []
            for index, reply in enumerate(replies):
                if isinstance(reply, redis.exceptions.NoScriptError) and index in scripted:
                    # Script cache empty (server restarted): load and redo just these.
                    replies[index] = self._script(*scripted[index])
            _raise_first_error(replies, "write")
            stale = [
                (old.decode(), identifier)
                for index, (identifier, new) in moves.items()
                if (old := replies[index]) is not None and old.decode() != new
            ]
            if stale:
                repair = self._client.pipeline(transaction=False)
                for old_owner, identifier in stale:
                    repair.srem(self._key(old_owner, "ids"), identifier)
                _raise_first_error(repair.execute(raise_on_error=False), "write")

    def add_contact_if_unchanged(self, record: ContactRecord, since: datetime, seen: int) -> bool:
        """Count and write in the contact script: one atomic step on the server."""
        check_batch(StoreBatch(contacts=[record]))
        check_aware(since, "since")
        [(keys, args)] = self._contact_calls([record], guard=(epoch_us(since), seen))
        with _mapped_errors("add_contact_if_unchanged"):
            written = self._script(self._add_contacts, keys, args)
        return written is not None

    def _contact_calls(
        self,
        contacts: Sequence[ContactRecord],
        *,
        guard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[list[str], list[Any]]]:
        by_profile: dict[str, dict[str, ContactRecord]] = {}
        for contact in contacts:
            by_profile.setdefault(contact.profile_id, {})[contact.decision_id] = contact
        for profile_id, records in by_profile.items():
            args: list[Any] = ["" if self._retention is None else self._retention]
            args += guard or ("", "")
            for decision_id, record in records.items():
                args += [decision_id, epoch_us(record.sent_at), encode_record(record)]
            yield [self._key(profile_id, "contacts"), self._key(profile_id, "crec")], args

    def erase(self, profile_id: str) -> ErasureReport:
        """Remove the profile's keys and its identity mappings, via its index."""
        check_id(profile_id, "profile_id")
        ids_key = self._key(profile_id, "ids")
        with _mapped_errors("erase"):
            look = self._client.pipeline(transaction=False)
            look.smembers(ids_key)
            look.hlen(self._key(profile_id, "merges"))
            look.zcard(self._key(profile_id, "contacts"))
            members, merges, contacts = look.execute()
            identifiers = sorted_ids(members)

            wipe = self._client.pipeline(transaction=False)
            wipe.delete(self.profile_key(profile_id))
            for identifier in identifiers:
                key = self.identity_key(identifier)
                wipe.execute_command("EVALSHA", self._delete_if.sha, 1, key, profile_id)
            parts = ("ids", "merges", "contacts", "crec")
            wipe.execute_command("DEL", *(self._key(profile_id, part) for part in parts))
            replies = wipe.execute(raise_on_error=False)
            for index, reply in enumerate(replies[1:-1], start=1):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    key = self.identity_key(identifiers[index - 1])
                    replies[index] = self._script(self._delete_if, [key], [profile_id])
            _raise_first_error(replies, "erase")
        return ErasureReport(
            profiles=int(replies[0]),
            identifiers=sum(int(r) for r in replies[1:-1]),
            merges=int(merges),
            contacts=int(contacts),
        )

    # --- reads ------------------------------------------------------------------------

    def read_profile(self, profile_id: str) -> bytes | None:
        """Return the profile's value, or ``None``; exactly one GET."""
        with _mapped_errors("read_profile"):
            value: bytes | None = self._client.get(self.profile_key(profile_id))
        return value

    def read_profiles(self, profile_ids: Sequence[str]) -> list[bytes | None]:
        """Return one value (or ``None``) per id, in the order given; one MGET."""
        if not profile_ids:
            return []
        with _mapped_errors("read_profiles"):
            return self._multi_get([self.profile_key(pid) for pid in profile_ids])

    def resolve(self, identifiers: Sequence[str]) -> str | None:
        """Return the profile of the first mapped identifier, in the order given; one MGET."""
        if not identifiers:
            return None
        with _mapped_errors("resolve"):
            owners = self._multi_get([self.identity_key(i) for i in identifiers])
        return next((owner.decode() for owner in owners if owner is not None), None)

    def redemptions(self, offer_ids: Sequence[str]) -> dict[str, int]:
        """Return the number of orders that redeemed each offer (``SCARD``, one pipeline)."""
        for i, offer_id in enumerate(offer_ids):
            check_id(offer_id, f"offer_ids[{i}]")
        if not offer_ids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for offer_id in offer_ids:
            pipe.scard(self.redeemed_key(offer_id))
        with _mapped_errors("redemptions"):
            counts = pipe.execute()
        return dict(zip(offer_ids, map(int, counts), strict=True))

    def identifiers_of(self, profile_id: str) -> list[str]:
        """Return the identifiers mapped to the profile, sorted; index, then verified."""
        with _mapped_errors("identifiers_of"):
            indexed = sorted_ids(self._client.smembers(self._key(profile_id, "ids")))
            if not indexed:
                return []
            owners = self._multi_get([self.identity_key(i) for i in indexed])
        wanted = profile_id.encode()
        return [i for i, owner in zip(indexed, owners, strict=True) if owner == wanted]

    def merges_of(self, profile_id: str) -> list[MergeRecord]:
        """Return the merges into the profile, ordered by time then id."""
        with _mapped_errors("merges_of"):
            raw = self._client.hvals(self._key(profile_id, "merges"))
        return sorted((decode_merge(r) for r in raw), key=merge_order)

    def contacts_of(self, profile_id: str, since: datetime | None = None) -> list[ContactRecord]:
        """Return the profile's contacts with ``sent_at >= since``, oldest first."""
        low: int | str = "-inf"
        if since is not None:
            check_aware(since, "since")
            low = epoch_us(since)
        with _mapped_errors("contacts_of"):
            raw = self._script(self._read_contacts, self._contact_keys(profile_id), [low])
        return _decoded_contacts(raw)

    def read_resolved(
        self, identifiers: Sequence[str], contacts_since: datetime | None = None
    ) -> ProfileRead:
        """Resolve and read in one round trip when the profile is the first identifier's.

        One ``MGET`` of the identity keys *and* the first identifier's profile value (a
        customer's profile is always ``customer_id:<id>``), pipelined with the contact
        script when contacts are asked for. Only when the identifiers resolve to another
        profile (a visitor merged into a customer) does it read that one after.
        """
        if not identifiers:
            return ProfileRead(None, None)
        if contacts_since is not None:
            check_aware(contacts_since, "contacts_since")
        first = identifiers[0]
        keys = [*(self.identity_key(i) for i in identifiers), self.profile_key(first)]
        raw_contacts: Any = None
        with _mapped_errors("read_resolved"):
            if self.cluster:
                values, raw_contacts = self._cluster_read(keys, first, contacts_since)
            elif contacts_since is None:
                [values] = self._hot_call(("MGET", *keys))
            else:
                low, contact_keys = epoch_us(contacts_since), self._contact_keys(first)
                values, raw_contacts = self._hot_call(
                    ("MGET", *keys),
                    ("EVALSHA", self._read_contacts.sha, 2, *contact_keys, low),
                )
                if isinstance(raw_contacts, redis.exceptions.NoScriptError):
                    raw_contacts = self._script(self._read_contacts, contact_keys, [low])
            _raise_first_error([values, raw_contacts], "read_resolved")
            _raise_first_error(values, "read_resolved")  # a key's own (a cluster's node)
        *owners, value = values
        owner = next((o.decode() for o in owners if o is not None), None)
        if owner is not None and owner != first:
            value = self.read_profile(owner)
            if contacts_since is not None:
                return ProfileRead(owner, value, self.contacts_of(owner, contacts_since))
            return ProfileRead(owner, value)
        if owner is None:
            value = None  # an unmapped identifier has no profile, whatever its key holds
        contacts = [] if raw_contacts is None else _decoded_contacts(raw_contacts)
        return ProfileRead(owner, value, contacts)

    def _hot_call(self, *commands: tuple[Any, ...]) -> list[Any]:
        return self._hot.call(self._client.connection_pool, *commands)

    def _cluster_read(
        self, keys: list[str], first: str, contacts_since: datetime | None
    ) -> tuple[list[Any], Any]:
        """read_resolved's round trip on a cluster: one write per node, then the replies.

        Straight to a connection of each node's pool, as on one server; when the slot map
        is out of date (a ``MOVED`` or ``ASK`` reply, a node gone) the call is made again
        through redis-py's cluster pipeline, which follows the redirection and refreshes
        the map.
        """
        contact_keys = self._contact_keys(first)
        commands: list[tuple[Any, ...]] = [("GET", key) for key in keys]
        if contacts_since is not None:
            low = epoch_us(contacts_since)
            commands.append(("EVALSHA", self._read_contacts.sha, 2, *contact_keys, low))
        replies = self._hot.call_cluster(self._client, commands)
        if replies is None:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = pipe.execute(raise_on_error=False)
        if contacts_since is None:
            return replies, None
        *values, raw_contacts = replies
        if isinstance(raw_contacts, redis.exceptions.NoScriptError):
            raw_contacts = self._script(self._read_contacts, contact_keys, [low])
        return values, raw_contacts

    def _contact_keys(self, profile_id: str) -> list[str]:
        return [self._key(profile_id, "contacts"), self._key(profile_id, "crec")]

    # --- lifecycle --------------------------------------------------------------------

    def ping(self) -> bool:
        """Return whether the server answers within the timeouts.

        On a cluster: whether the cluster says its state is ``ok`` (every slot served) and
        every primary that serves slots now answers. The first node that answers tells
        which those are, so a primary that died and was replaced is not asked, and one
        that died a moment ago (before the cluster noticed) is.
        """
        try:
            client = self._client
            if not self.cluster:
                return bool(client.ping())
            return self._cluster_ready(client)
        except (redis.RedisError, RedisClusterException, StoreError):
            return False

    def _cluster_ready(self, client: Any) -> bool:
        for node in client.get_nodes():
            try:
                server = client.get_redis_connection(node)
                if server.cluster("INFO").get("cluster_state") != "ok":
                    return False
                slots = server.execute_command("CLUSTER SLOTS")
                break
            except redis.ConnectionError:
                continue  # ask another node
        else:
            return False
        owners = {(row[2][0].decode(), int(row[2][1])) for row in slots}
        for host, port in sorted(owners):
            node = client.get_node(host=host, port=port)
            if node is None:  # a node the client has not met yet: it answers for itself
                with redis.Redis(host=host, port=port, **self._node_options()) as server:
                    server.ping()
            else:
                client.get_redis_connection(node).ping()
        return True

    def _node_options(self) -> dict[str, Any]:
        return {k: v for k, v in self._options.items() if k != "decode_responses"}

    def close(self) -> None:
        """Close the connections; idempotent."""
        self._hot.close()
        with self._connect_lock:
            client = self._made
            if self.cluster:
                self._made = None  # a later call connects again
        if client is not None:
            client.close()

    def _where(self) -> str:
        if self.cluster:
            parsed = urlsplit(self._url)
            return f"{parsed.hostname}:{parsed.port or 6379} (cluster)"
        kwargs = self._client.connection_pool.connection_kwargs
        return f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"

    def __repr__(self) -> str:
        return f"RedisStore({self._where()}, namespace={self.namespace!r})"


class _HotConnections:
    """A connection per thread and server for serving's per-request read.

    redis-py 8's per-command path (pool checkout and release, the retry wrapper, the
    observability hooks) costs about 80 µs of CPU, twice what sending an ``MGET`` and
    parsing its reply does; serving pays it on every request, so that read goes straight
    to a connection made by the client's own pool (same timeouts, same parser), one pool
    per node on a cluster. The retry policy is the client's: one retry after a connection
    error (a restarted server leaves a dead socket), none after a timeout.
    """

    # Replies that say the slot map is out of date: the cluster client knows what to do.
    _STALE_MAP = (redis.exceptions.AskError, redis.exceptions.TryAgainError, ClusterDownError)

    def __init__(self, retries: int) -> None:
        self._retries = retries
        self._local = threading.local()
        self._made: list[Any] = []
        self._lock = threading.Lock()

    def call(self, pool: redis.ConnectionPool, *commands: tuple[Any, ...]) -> list[Any]:
        """Send the commands in one write and return their replies (an error reply as is)."""
        failures = 0
        while True:
            connection = self._connection(pool)
            try:
                connection.send_packed_command(connection.pack_commands(commands))
                return [self._reply(connection) for _ in commands]
            except redis.ConnectionError:
                connection.disconnect()
                failures += 1
                if failures > self._retries:
                    raise
            except BaseException:  # whatever is left on the socket would answer the next call
                connection.disconnect()  # (redis-py drops it on a timeout already)
                raise

    def call_cluster(self, client: Any, commands: list[tuple[Any, ...]]) -> list[Any] | None:
        """Send each command to the node of its first key, all nodes before any reply.

        Returns the replies in the commands' order, or ``None`` when the cluster client
        should make the call instead: a reply says the slot map is stale, or a node's
        connection failed. A timeout raises (the caller's answer is then degraded).
        """
        nodes = client.nodes_manager
        by_pool: dict[int, tuple[Any, list[int]]] = {}
        for index, command in enumerate(commands):
            key = command[1] if command[0] != "EVALSHA" else command[3]
            node = nodes.get_node_from_slot(key_slot(key.encode()))
            pool = client.get_redis_connection(node).connection_pool
            by_pool.setdefault(id(pool), (pool, []))[1].append(index)
        replies: list[Any] = [None] * len(commands)
        used: list[Any] = []
        try:
            for pool, indices in by_pool.values():
                connection = self._connection(pool)
                used.append(connection)
                connection.send_packed_command(
                    connection.pack_commands([commands[i] for i in indices])
                )
            for connection, (_pool, indices) in zip(used, by_pool.values(), strict=True):
                for index in indices:
                    replies[index] = self._reply(connection)
        except redis.ConnectionError:
            for connection in used:
                connection.disconnect()
            return None
        except BaseException:
            for connection in used:
                connection.disconnect()
            raise
        if any(isinstance(reply, self._STALE_MAP) for reply in replies):
            return None
        return replies

    @staticmethod
    def _reply(connection: Any) -> Any:
        try:
            return connection.read_response()
        except redis.ResponseError as error:  # read whole: the next reply is in sync
            return error

    def _connection(self, pool: redis.ConnectionPool) -> Any:
        connections = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        # The pool is kept beside its connection so that its id is never reused by another.
        _pool, connection = connections.get(id(pool), (pool, None))
        if connection is None:
            connection = pool.make_connection()
            connections[id(pool)] = (pool, connection)
            with self._lock:
                self._made.append(connection)
        return connection

    def close(self) -> None:
        """Disconnect every connection made; idempotent."""
        with self._lock:
            for connection in self._made:
                connection.disconnect()
            self._made.clear()
        self._local = threading.local()


def sorted_ids(members: Any) -> list[str]:
    """Decode and sort a set of identifier bytes."""
    return sorted(m.decode() for m in members)


def _decoded_contacts(raw: list[bytes | None]) -> list[ContactRecord]:
    # The zset already orders by (score, id); sorting again is cheap and makes the order
    # independent of the float score's precision.
    return sorted((decode_contact(r) for r in raw if r is not None), key=contact_order)


def _raise_first_error(replies: list[Any], operation: str) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            if _unreachable(reply):
                msg = f"redis store {operation}: server unavailable: {reply}"
                raise StoreUnavailableError(msg) from reply
            msg = f"redis store {operation} failed: {reply}"
            raise StoreError(msg) from reply


def _unreachable(error: BaseException) -> bool:
    """Whether a redis-py error means the server (or cluster) cannot be reached now."""
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError, ClusterDownError)):
        return True
    if isinstance(error, SlotNotCoveredError):  # a node of the cluster is down
        return True
    # The cluster client raises "cannot be connected" from the last connection error.
    return isinstance(error, RedisClusterException) and isinstance(
        error.__cause__, (redis.ConnectionError, redis.TimeoutError)
    )


@contextmanager
def _mapped_errors(operation: str) -> Iterator[None]:
    """Turn redis-py errors into the store's: unreachable vs. failed."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        if _unreachable(exc):
            msg = f"redis store {operation}: server unavailable: {exc}"
            raise StoreUnavailableError(msg) from exc
        msg = f"redis store {operation} failed: {exc}"
        raise StoreError(msg) from exc
