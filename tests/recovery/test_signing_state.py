"""A rebuilt store keeps the validator's last signed vote, so the validator never signs twice."""

from __future__ import annotations

from pathlib import Path

from medledger.chain.store import BlockStore, LastSigned, copy_signing_state


def test_rebuild_carries_the_last_signed_vote_into_the_new_store(tmp_path: Path) -> None:
    old = BlockStore.open(tmp_path / "old")
    last = LastSigned(height=7, round=2, step=2, block_hash=b"\x05" * 32)
    old.save_last_signed(last)
    old.close()
    carried = copy_signing_state(tmp_path / "old", tmp_path / "new")
    assert carried == ["last signed vote"]
    new = BlockStore.open(tmp_path / "new")
    try:
        assert new.load_last_signed() == last
        assert not new.is_initialized  # only the signing state: the chain comes back from peers
    finally:
        new.close()


def test_invalid_unreadable_old_store_carries_nothing(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "CURRENT").write_bytes(b"garbage\n")
    assert copy_signing_state(tmp_path / "old", tmp_path / "new") == []
    assert not (tmp_path / "new").exists()


def test_a_store_that_never_signed_carries_nothing(tmp_path: Path) -> None:
    BlockStore.open(tmp_path / "old").close()
    assert copy_signing_state(tmp_path / "old", tmp_path / "new") == []
