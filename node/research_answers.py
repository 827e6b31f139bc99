"""An institution's node answers the research queries addressed to it (issue 13, ADR 0019).

A follower of committed blocks, like the event publisher (`node.mqtt`): woken by each commit, it
looks for queries it has not seen yet (a cursor per study, over `state.list_query_ids`), and for
each query that asks this institution and that it has not answered, it computes the answer
(`health.research_compute`, in a worker thread: records are decrypted and parsed), builds the
`health.post_answer` tx, **saves the signed tx durably, then submits it**.

The same query is never answered with fresh noise: `SavedAnswers` keeps one signed tx per query
under the node's home (`research-answers/<query id>.tx`, written to a temporary file, fsynced and
renamed, the folder fsynced), and a saved answer is the answer: after a crash, a restart or a lost
submission the same bytes are posted again until the ledger holds this institution's answer. A
second draw never reaches a mempool. Answers are public on the ledger, so the file holds nothing
the network will not see; it is written before submission only so that it is the only draw.

Logs name query ids and counts, never a patient or a value.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from aiohttp import web

from medledger.chain.app import StateReader
from medledger.chain.errors import InvalidTxError, MempoolFullError, StaleTxError
from medledger.chain.execution import ExecutedBlock
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import TxId, compute_tx_id
from medledger.chain.validation import decode_tx
from medledger.crypto import HASH_SIZE, Identity
from medledger.health import state as st
from medledger.health.errors import HealthError
from medledger.health.research_client import build_post_answer
from medledger.health.research_compute import FactsCache, compute_answer_from_ledger
from medledger.health.research_types import QueryState
from medledger.node.node import Node

log = logging.getLogger(__name__)

#: The folder of saved answers under the node's home.
ANSWERS_DIR: Final = "research-answers"
ANSWER_SUFFIX: Final = ".tx"
#: The follower looks for queries at least this often (it is woken by each commit).
POLL_S: Final = 2.0
#: Records whose facts the answerer keeps in memory at most (then it starts again).
FACTS_CACHE_RECORDS_MAX: Final = 500_000
#: Committed tx ids noted between two steps of the answerer (a long sync: the rest is opened lazily).
COMMITTED_NOTED_MAX: Final = 200_000
#: Queries read per study per step.
QUERIES_PER_STEP_MAX: Final = 100


class SavedAnswers:
    """One signed `post_answer` tx per query, durable before it is submitted."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, query_id: bytes) -> Path:
        if len(query_id) != HASH_SIZE:
            raise ValueError("a query id is a hash")
        return self.directory / f"{query_id.hex()}{ANSWER_SUFFIX}"

    def load(self, query_id: bytes) -> bytes | None:
        try:
            return self._path(query_id).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, query_id: bytes, raw: bytes) -> None:
        """Write `raw` for `query_id` durably. An answer once saved is only ever replaced by the
        same answer signed again (`resign_answer`): the body, so the noise, never changes."""
        path = self._path(query_id)
        old = self.load(query_id)
        if old is not None and decode_tx(old)[0].body != decode_tx(raw)[0].body:
            raise FileExistsError("another answer to this query is saved")  # a bug: load first
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        with temporary.open("wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        folder = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def list_query_ids(self) -> list[bytes]:
        if not self.directory.is_dir():
            return []
        ids = []
        for path in sorted(self.directory.glob(f"*{ANSWER_SUFFIX}")):
            with contextlib.suppress(ValueError):
                query_id = bytes.fromhex(path.name.removesuffix(ANSWER_SUFFIX))
                if len(query_id) == HASH_SIZE:
                    ids.append(query_id)
        return ids


def prepare_answer(
    saved: SavedAnswers,
    state: StateReader,
    identity: Identity,
    chain_id: str,
    query: QueryState,
    now_ms: int,
    cache: FactsCache | None = None,
) -> bytes:
    """The signed answer of this institution to `query`: the saved one, or a new one, saved first."""
    raw = saved.load(query.query_id)
    if raw is not None:
        return raw
    body = compute_answer_from_ledger(state, identity, query, cache)
    _, raw, _ = build_post_answer(identity, body, chain_id=chain_id, timestamp_ms=now_ms)
    saved.save(query.query_id, raw)
    return raw


def resign_answer(saved: SavedAnswers, identity: Identity, query_id: bytes, raw: bytes, now_ms: int) -> bytes:
    """The saved answer signed again with a fresh timestamp (a node down for longer than the
    admission clock skew): the same body, so the same noise; the ledger takes one answer only."""
    tx, _ = decode_tx(raw)
    _, fresh, _ = sign_tx(identity, chain_id=tx.chain_id, kind=tx.kind, body=tx.body, timestamp_ms=now_ms)
    saved.save(query_id, fresh)
    return fresh


class ResearchAnswerer:
    """Follows committed blocks and posts this institution's answers (module docstring)."""

    def __init__(self, node: Node, saved: SavedAnswers) -> None:
        self.node = node
        self.saved = saved
        self.me = node.identity.public.sign_key
        self._woken = asyncio.Event()
        self._studies_seen = 0
        self._queries_seen: dict[bytes, int] = {}
        #: Queries this node has a saved answer for that the ledger does not hold yet.
        self._unposted: dict[bytes, bytes] = {}
        self._saved_loaded = False
        #: Own records' facts and each patient's own records, in this process's memory only; filled
        #: as own records are committed, so that a query opens none of them (bounded).
        self._facts = FactsCache(FACTS_CACHE_RECORDS_MAX)
        #: Ids of txs committed since the last step: own new records among them are opened then.
        self._committed: list[TxId] = []
        self._facts_filled = False
        #: Queries found that ask this institution, not yet computed (in order).
        self._to_answer: list[QueryState] = []
        #: Its own worker thread, shut down (waited for) before the node closes its store.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="research-answer")

    def note_committed(self, executed: ExecutedBlock) -> None:
        """A commit listener (`Node.commit_listeners`): note the block's txs and wake the follower."""
        if len(self._committed) < COMMITTED_NOTED_MAX:  # past it, a query opens the rest itself
            self._committed.extend(executed.tx_ids)
        self._woken.set()

    def _new_queries(self, state: StateReader) -> list[QueryState]:
        studies = st.list_study_ids(state, start=self._studies_seen)
        self._studies_seen += len(studies)
        for study_id in studies:
            self._queries_seen.setdefault(study_id, 0)
        found = []
        for study_id, seen in self._queries_seen.items():
            query_ids = st.list_query_ids(state, study_id, start=seen, limit=QUERIES_PER_STEP_MAX)
            self._queries_seen[study_id] = seen + len(query_ids)
            for query_id in query_ids:
                query = st.get_query(state, query_id)
                if query is not None and self.me in query.institutions:
                    found.append(query)
        return found

    def step(self) -> list[tuple[bytes, bytes]]:
        """One look at the ledger (in a worker thread): answers to submit now."""
        state = self.node.store
        chain_id = self.node.genesis.chain_id
        if not self._saved_loaded:  # after a restart: what was saved and maybe never posted
            for query_id in self.saved.list_query_ids():
                raw = self.saved.load(query_id)
                if raw is not None:
                    self._unposted[query_id] = raw
            self._saved_loaded = True
        if not self._facts_filled:  # after a start: every record on the store, once, in this thread
            self._fill_facts()
        committed, self._committed = self._committed, []
        self._facts.warm(state, self.node.identity, committed)
        self._to_answer.extend(self._new_queries(state))
        while self._to_answer:
            query = self._to_answer[0]
            if st.get_answer(state, query.query_id, self.me) is None:
                try:
                    self._unposted[query.query_id] = prepare_answer(
                        self.saved,
                        state,
                        self.node.identity,
                        chain_id,
                        query,
                        self.node.clock_ms(),
                        self._facts,
                    )
                except HealthError as exc:
                    log.warning("query %s not answered: %s", query.query_id.hex()[:16], exc.code)
                except OSError:
                    raise  # the saved answers' folder: this query stays first, the step is retried
                except Exception:  # a bug (or the DP library's): never stops the other queries' answers
                    log.exception("query %s not answered", query.query_id.hex()[:16])
            self._to_answer.pop(0)
        to_submit = []
        for query_id, raw in list(self._unposted.items()):
            if st.get_answer(state, query_id, self.me) is not None:
                del self._unposted[query_id]
                continue
            tx_id = compute_tx_id(raw)
            if self.node.get_tx_status(tx_id) is None:
                to_submit.append((query_id, raw))
        return to_submit

    def _fill_facts(self) -> None:
        """Open this institution's records already on the store (a restarted node), so that a
        query after a restart is as fast as one after the records committed here."""
        started = time.monotonic()
        prefix = st.RECORD_KEY_PREFIX
        ids = [
            key[len(prefix) :]
            for key, _ in self.node.store.iter_app(prefix)
            if len(key) == len(prefix) + HASH_SIZE
        ]
        opened = self._facts.warm(self.node.store, self.node.identity, ids)
        self._facts_filled = True
        if opened:
            log.info("research: facts of %d own records opened in %.1f s", opened, time.monotonic() - started)

    async def follow(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                raws = await loop.run_in_executor(self._executor, self.step)
            except OSError as exc:  # the saved answers' folder (a full disk): retried, never redrawn
                log.error("research answers cannot be saved or read (%s); trying again", exc.strerror)
                raws = []
            for query_id, raw in raws:
                try:
                    await self.node.submit([raw])
                except MempoolFullError:
                    log.info("mempool full: a research answer waits for the next block")
                except StaleTxError:
                    fresh = await loop.run_in_executor(
                        self._executor,
                        resign_answer,
                        self.saved,
                        self.node.identity,
                        query_id,
                        raw,
                        self.node.clock_ms(),
                    )
                    self._unposted[query_id] = fresh
                except InvalidTxError as exc:
                    # Refused as it is (e.g. answered by a saved tx committed meanwhile): the
                    # next step sees the answer on the ledger; never a fresh draw.
                    log.warning("a research answer was refused at admission (%s)", exc.code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), POLL_S)
            self._woken.clear()

    def close(self) -> None:
        """Wait for a step still running (after `follow` has ended): it reads the node's store."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def add_research_answerer(app: web.Application, node: Node) -> None:
    """Start and stop the answerer with the API app (for a node that is an author institution)."""

    async def answerer_ctx(app: web.Application) -> AsyncIterator[None]:
        answerer = ResearchAnswerer(node, SavedAnswers(node.config.home / ANSWERS_DIR))
        node.commit_listeners.append(answerer.note_committed)
        task = asyncio.create_task(answerer.follow())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        node.commit_listeners.remove(answerer.note_committed)
        answerer.close()

    app.cleanup_ctx.append(answerer_ctx)
