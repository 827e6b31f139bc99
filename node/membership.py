"""Who belongs to the network, as the committed state says (issue 16, ADR 0020).

A node reads the institutions and their statuses from its committed state, not from the genesis:
an institution added by governance is known from the block that adds it, and a suspended or
removed one stops being a member from the block that says so. The view is read lazily (the store
opens after the API is built) and again after every block whose writes touch membership
(`refresh_if_changed`, on the commit path: the writes are already in hand, so a block without
membership changes costs a scan of its write keys only).

Peer links (`is_linkable`): an active institution may link; so may a key whose addition is
pending (a current validator proposed it), so that a joining node can sync before the vote ends;
a suspended or removed one may not (validators and configured observers are judged by the node).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from medledger.chain.store import BlockStore
from medledger.health import state as st
from medledger.health.membership_types import KIND_INSTITUTION_ADD, STATUS_ACTIVE
from medledger.health.types import Institution


class MembershipView:
    """The institutions (every one ever registered), their statuses and pending additions."""

    def __init__(self, get_store: Callable[[], BlockStore | None]) -> None:
        self._get_store = get_store
        self._loaded = False
        self._institutions: dict[bytes, Institution] = {}
        self._statuses: dict[bytes, str] = {}
        self._pending_adds: dict[bytes, Institution] = {}

    def _ensure(self) -> None:
        if not self._loaded:
            self.refresh()

    def refresh(self) -> None:
        store = self._get_store()
        if store is None:
            return
        institutions = {i.sign_key: i for i in st.iter_institutions(store)}
        statuses: dict[bytes, str] = {}
        for key in institutions:
            status = st.get_institution_status(store, key)
            statuses[key] = STATUS_ACTIVE if status is None else status.status
        pending: dict[bytes, Institution] = {}
        for change_id in st.list_membership_change_ids(store, limit=st.LIST_LIMIT_MAX):
            change = st.get_membership_change(store, change_id)
            if (
                change is not None
                and change.is_pending
                and change.kind == KIND_INSTITUTION_ADD
                and change.institution.sign_key not in institutions
            ):
                pending[change.institution.sign_key] = change.institution
        self._institutions, self._statuses, self._pending_adds = institutions, statuses, pending
        self._loaded = True

    def refresh_if_changed(self, writes: Mapping[bytes, bytes | None]) -> bool:
        """Re-read if a block's `writes` touch membership; whether they did."""
        if not any(key.startswith(st.MEMBERSHIP_KEY_PREFIXES) for key in writes):
            return False
        self.refresh()
        return True

    @property
    def institutions(self) -> dict[bytes, Institution]:
        """Every registered institution, active or not (removed ones keep their entry)."""
        self._ensure()
        return self._institutions

    def status_of(self, key: bytes) -> str | None:
        """`active`, `suspended`, `removed`, or None for a key that is no institution."""
        self._ensure()
        return self._statuses.get(key)

    def is_active(self, key: bytes) -> bool:
        return self.status_of(key) == STATUS_ACTIVE

    def is_pending_addition(self, key: bytes) -> bool:
        self._ensure()
        return key in self._pending_adds

    def is_linkable(self, key: bytes) -> bool:
        """Whether the committed state lets `key` hold a peer link."""
        return self.is_active(key) or self.is_pending_addition(key)
