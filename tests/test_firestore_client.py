"""The Firestore adapter: the function's client gives up on an unreachable Firestore within
its bound, and the writes it buffers itself equal the client library's."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers
from google.cloud.firestore_v1.vector import Vector

from stripe_ledger import firestore_client
from stripe_ledger.config import Settings
from stripe_ledger.errors import LedgerUnavailable
from stripe_ledger.firestore_client import (
    bound_rpc_time,
    buffer_replacement,
    buffer_update,
    commit_writes,
    create_client,
    create_document,
    fields_of,
    get_documents,
    read_through,
    run_transaction,
)
from stripe_ledger.ledger import EventLedger, Status
from stripe_ledger.pipeline import process_event
from stripe_ledger.registry import HandlerRegistry
from stripe_ledger.verify import parse_event
from tests.support import (
    SECRET,
    InjectedRpcError,
    RpcCounter,
    count_rpcs,
    make_event,
    record_decoding,
    record_rpcs,
)


def test_unreachable_firestore_is_unavailable_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With nothing listening, a delivery raises LedgerUnavailable (503) after about the
    configured bound, instead of the client's default minute of retries."""
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    client = firestore.Client(
        project="unreachable",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint="127.0.0.1:9"),
    )
    bound_rpc_time(client, 2)
    settings = Settings(webhook_secrets=(SECRET,))
    received = parse_event(json.dumps(make_event("nobody.listens")))
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable):
        process_event(
            received, db=client, ledger=EventLedger(client, settings), registry=HandlerRegistry()
        )
    assert time.monotonic() - started < 10


# Every shape of plain data a projection holds, and values only the client library encodes.
_DATA: dict[str, Any] = {
    "none": None,
    "true": True,
    "zero": 0,
    "big": 2**63 - 1,
    "negative": -(2**63),
    "float": 1.5,
    "whole_float": 2.0,
    "text": "héllo",
    "empty_text": "",
    "empty_map": {},
    "empty_list": [],
    "nested": {"a": [1, {"b": [None, False, "c"]}, {}], "dotted.key": {"`odd` key": 1}},
    "when": datetime(2026, 12, 2, 6, 0, 0, 123456, tzinfo=UTC),
    "naive_when": datetime(2026, 12, 2, 6, 0, 0, 654321),  # the library takes it as UTC
    "before_1970": datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC),
    "in_paris": datetime(2026, 12, 2, 7, 0, 0, 1, tzinfo=timezone(timedelta(hours=1))),
    "status": Status.COMPLETED,  # a StrEnum: stored as its value
    "raw": b"\x00\x01",
    "tuple": (1, 2),
}

# _DATA as it reads back.
_READ_BACK = {**_DATA, "tuple": [1, 2], "naive_when": _DATA["naive_when"].replace(tzinfo=UTC)}


@pytest.mark.emulator
class TestBufferReplacement:
    def _commit(self, db: firestore.Client, write: Callable[[firestore.Transaction], None]) -> None:
        firestore.transactional(write)(db.transaction())

    def test_plain_data_is_written_as_the_client_writes_it(self, db: firestore.Client) -> None:
        """Every value reads back as it does when the client library writes the same data
        (which it encodes itself); the written request's fields are equal too."""
        ours, theirs = db.collection("c").document("ours"), db.collection("c").document("theirs")
        theirs.create(_DATA)
        self._commit(db, lambda tx: buffer_replacement(tx, ours, _DATA))
        assert ours.get().to_dict() == theirs.get().to_dict()

        tx = db.transaction()
        buffer_replacement(tx, ours, _DATA)
        tx.create(theirs, _DATA)
        mine, client = tx._write_pbs
        assert mine.update.fields == client._pb.update.fields

    def test_it_replaces_the_whole_document_on_condition(self, db: firestore.Client) -> None:
        """Without an update time it creates, and fails if the document exists; with one it
        replaces every field (a field the data lacks is gone) if the document still has it,
        and fails if it changed since."""
        ref = db.collection("c").document("d")
        self._commit(db, lambda tx: buffer_replacement(tx, ref, {"a": 1, "b": 2}))
        with pytest.raises(gexc.AlreadyExists):
            self._commit(db, lambda tx: buffer_replacement(tx, ref, {"a": 0}))
        read = ref.get()
        self._commit(
            db, lambda tx: buffer_replacement(tx, ref, {"a": 3}, update_time=read.update_time)
        )
        assert ref.get().to_dict() == {"a": 3}
        with pytest.raises(gexc.FailedPrecondition):
            self._commit(
                db, lambda tx: buffer_replacement(tx, ref, {"a": 4}, update_time=read.update_time)
            )
        assert ref.get().to_dict() == {"a": 3}

    def test_a_transform_is_left_to_the_client(self, db: firestore.Client) -> None:
        """Data holding a transform is written by the client library, with the condition."""
        ref = db.collection("c").document("t")
        data = {"n": firestore.Increment(2), "at": firestore.SERVER_TIMESTAMP, "x": {"y": 1}}
        self._commit(db, lambda tx: buffer_replacement(tx, ref, data))
        stored = ref.get()
        assert stored.get("n") == 2
        assert stored.get("x") == {"y": 1}
        assert isinstance(stored.get("at"), datetime)
        with pytest.raises(gexc.AlreadyExists):
            self._commit(db, lambda tx: buffer_replacement(tx, ref, data))
        self._commit(
            db, lambda tx: buffer_replacement(tx, ref, data, update_time=stored.update_time)
        )
        assert ref.get().get("n") == 2  # replaced, not incremented on top

    def test_an_update_is_written_as_the_client_writes_it(self, db: firestore.Client) -> None:
        """`buffer_update` sets the given fields and keeps the others, on condition that the
        document did not change since; its write equals the library's `update`, and data
        holding a transform is left to the library."""
        ref = db.collection("c").document("u")
        created = create_document(ref, {"keep": 1, "status": "processing"})
        fields = {**_DATA, "status": Status.COMPLETED}
        self._commit(db, lambda tx: buffer_update(tx, ref, fields, update_time=created))
        assert ref.get().to_dict() == {**_READ_BACK, "keep": 1}
        with pytest.raises(gexc.FailedPrecondition):
            self._commit(db, lambda tx: buffer_update(tx, ref, {"keep": 2}, update_time=created))

        tx = db.transaction()
        buffer_update(tx, ref, fields, update_time=created)
        tx.update(ref, fields, option=db.write_option(last_update_time=created))
        mine, client = tx._write_pbs
        assert mine == client._pb

        stored = ref.get()
        transform = {"n": firestore.Increment(2)}
        self._commit(
            db, lambda tx: buffer_update(tx, ref, transform, update_time=stored.update_time)
        )
        assert ref.get().get("n") == 2
        assert ref.get().get("keep") == 1

    def test_create_document_creates_once(self, db: firestore.Client) -> None:
        """`create_document` is `create()`: the document's update time, then AlreadyExists."""
        ref = db.collection("c").document("created")
        update_time = create_document(ref, _DATA)
        stored = ref.get()
        assert stored.update_time == update_time
        assert stored.to_dict() == _READ_BACK
        with pytest.raises(gexc.AlreadyExists):
            create_document(ref, {"a": 1})


class _UnavailableOnce(RpcCounter):
    """Answers the first Commit UNAVAILABLE without sending it; counts every call."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._count(details)
        if self.calls["Commit"] == 1:
            return InjectedRpcError(grpc.StatusCode.UNAVAILABLE, "injected: unavailable")
        return continuation(details, request)


@pytest.mark.emulator
class TestCommitWrites:
    def test_a_transient_error_is_retried_as_the_library_retries_it(
        self, db: firestore.Client
    ) -> None:
        """`commit_writes` keeps the client's retry policy: UNAVAILABLE once, then the
        Commit goes through, over the client's current channel."""
        counter = count_rpcs(db, _UnavailableOnce())
        ref = db.collection("c").document("retried")
        create_document(ref, {"a": 1})
        assert dict(counter.calls) == {"Commit": 2}
        assert ref.get().to_dict() == {"a": 1}

    def test_errors_are_the_librarys(self, db: firestore.Client) -> None:
        """A refused Commit raises the library's exception for its status code."""
        ref = db.collection("c").document("refused")
        create_document(ref, {"a": 1})
        batch = db.batch()
        buffer_replacement(batch, ref, {"a": 2})
        with pytest.raises(gexc.AlreadyExists):
            commit_writes(db, batch._write_pbs)


@pytest.mark.emulator
class TestGetDocuments:
    def test_snapshots_are_the_librarys(self, db: firestore.Client) -> None:
        """One BatchGetDocuments; each snapshot (found or missing) equals `get_all`'s: data,
        existence and times."""
        found, missing = db.collection("c").document("found"), db.collection("c").document("no")
        create_document(found, _DATA)
        counter = count_rpcs(db)
        ours = {s.reference.path: s for s in get_documents(db, [found, missing, found])}
        assert dict(counter.calls) == {"BatchGetDocuments": 1}
        theirs = {s.reference.path: s for s in db.get_all([found, missing])}
        assert ours.keys() == theirs.keys()
        for path, snapshot in ours.items():
            library = theirs[path]
            assert snapshot.to_dict() == library.to_dict()
            assert snapshot.exists == library.exists
            assert snapshot.update_time == library.update_time
            assert snapshot.create_time == library.create_time
            assert type(snapshot.read_time) is type(library.read_time)
        assert ours[found.path].to_dict() == _READ_BACK

    @pytest.mark.parametrize("exists", [True, False], ids=["found", "missing"])
    def test_one_document_is_read_with_one_unary_call(
        self, db: firestore.Client, exists: bool
    ) -> None:
        """One document: one GetDocument (unary, so no stream for gRPC to hand over between
        threads); its snapshot equals `get()`'s in data, existence and times, but has no
        read time (GetDocument gives none)."""
        ref = db.collection("c").document(f"one-{exists}")
        if exists:
            create_document(ref, _DATA)
        counter = count_rpcs(db)
        (ours,) = get_documents(db, [ref, ref])
        assert dict(counter.calls) == {"GetDocument": 1}
        library = ref.get()
        assert ours.exists is library.exists is exists
        assert ours.to_dict() == library.to_dict()
        assert (ours.create_time, ours.update_time) == (library.create_time, library.update_time)
        assert ours.read_time is None

    def test_a_missing_document_is_an_answer_not_an_error(
        self, db: firestore.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """GetDocument's NOT_FOUND for a missing document becomes a missing snapshot without
        the library's conversion of a gRPC error (which parses the status and raises through
        the retry: more CPU than the read); every other error is still converted."""
        converted: list[grpc.RpcError] = []
        real = firestore_client._FROM_GRPC

        def converting(error: grpc.RpcError) -> gexc.GoogleAPICallError:
            converted.append(error)
            return real(error)

        monkeypatch.setattr(firestore_client, "_FROM_GRPC", converting)
        (missing,) = get_documents(db, [db.collection("c").document("never-written")])
        assert not missing.exists
        assert converted == []
        with pytest.raises(gexc.InvalidArgument):  # an error that is not NOT_FOUND
            get_documents(db, [db.collection("c").document("__reserved__")])
        assert [error.code() for error in converted] == [grpc.StatusCode.INVALID_ARGUMENT]

    def test_a_stream_is_received_by_the_thread_that_called(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On the function's client, a BatchGetDocuments starts no gRPC thread: its messages
        are received by the calling thread, not handed over by a thread of the channel's,
        which gRPC would otherwise start for each call when no other call is running."""
        client = create_client(Settings(webhook_secrets=(SECRET,)), os.environ)
        refs = [client.collection("c").document(f"stream-{n}") for n in range(2)]
        get_documents(client, refs)  # the channel is connected
        started: list[str] = []
        real_start = threading.Thread.start

        def recording(thread: threading.Thread) -> None:
            started.append(thread.name)
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", recording)
        for _ in range(3):
            assert len(get_documents(client, refs)) == 2
            time.sleep(0.05)  # a thread the call before started has ended by now
        assert started == []

    def test_every_call_carries_the_metadata_the_generated_client_sends(
        self, db: firestore.Client
    ) -> None:
        """GetDocument, BatchGetDocuments and Commit, sent by the adapter, carry the headers
        the generated client sends for the same request (its routing header names the
        document for a GetDocument, the database for the others)."""
        ref, other = db.collection("c").document("meta"), db.collection("c").document("other")
        recorder = record_rpcs(db)
        create_document(ref, {"a": 1})
        get_documents(db, [ref])
        get_documents(db, [ref, other])
        ours = dict(recorder.metadata)
        recorder.metadata.clear()
        api, prefix = db._firestore_api, db._rpc_metadata
        api.get_document(request={"name": ref._document_path}, metadata=prefix)
        documents = [ref._document_path, other._document_path]
        list(
            api.batch_get_documents(
                request={"database": db._database_string, "documents": documents},
                metadata=prefix,
            )
        )
        api.commit(request={"database": db._database_string, "writes": []}, metadata=prefix)
        theirs = dict(recorder.metadata)
        assert ours.keys() == theirs.keys() == {"GetDocument", "BatchGetDocuments", "Commit"}
        for method, headers in theirs.items():
            assert ours[method] == headers, method

    def test_fields_are_decoded_when_first_asked_for(
        self, db: firestore.Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A snapshot decodes its fields on the first `to_dict()`/`get()`/`fields_of`, once;
        one never looked at is never decoded."""
        looked_at, ignored = db.collection("c").document("seen"), db.collection("c").document("not")
        create_document(looked_at, {"name": "seen"})
        create_document(ignored, {"name": "not"})
        decoded = record_decoding(monkeypatch)
        snapshots = {s.reference.path: s for s in get_documents(db, [looked_at, ignored])}
        assert decoded == []
        seen = snapshots[looked_at.path]
        assert seen.get("name") == "seen"
        assert seen.to_dict() == fields_of(seen) == {"name": "seen"}
        assert [fields["name"].string_value for fields in decoded] == ["seen"]

    def test_every_kind_of_value_decodes_as_the_library_decodes_it(
        self, db: firestore.Client
    ) -> None:
        """Values of every kind, plain ones (decoded by the adapter) and the rest (left to the
        library: bytes, references, geo points, vectors, maps with `__` keys), read back
        equal to the library's and of the same types, at any depth."""
        values: dict[str, Any] = {
            **_DATA,
            "reference": db.collection("c").document("elsewhere"),
            "where": firestore.GeoPoint(48.85, 2.35),
            "vector": Vector([1.0, 2.5]),
            "dunder_key": {"__kept": 1, "other": [b"\x02", {"__kept_too": None}]},
            "one_dunder_key": {"__kept": {"in": 1}},
            "deep": [{"in": [{"when": _DATA["when"], "refs": [db.document("c/x")]}]}],
        }
        ref = db.collection("c").document("kinds")
        ref.set(values)
        (ours,) = get_documents(db, [ref])
        (theirs,) = db.get_all([ref])

        def same(mine: Any, library: Any, path: str) -> None:
            assert type(mine) is type(library), path
            if isinstance(library, dict):
                assert mine.keys() == library.keys(), path
                for key in library:
                    same(mine[key], library[key], f"{path}.{key}")
            elif isinstance(library, list):
                assert len(mine) == len(library), path
                for index, (a, b) in enumerate(zip(mine, library, strict=True)):
                    same(a, b, f"{path}[{index}]")
            else:
                assert mine == library, path

        same(ours.to_dict(), theirs.to_dict(), "")

    def test_maps_the_library_decodes_into_types_are_left_to_it(self, db: firestore.Client) -> None:
        """A map of one key starting `__` is how a BSON value travels, and a map with a
        `__type__` key may be a vector; the emulator stores neither kind, so their protobufs
        are decoded here: as the library decodes them, into the same types."""
        maps: list[dict[str, Any]] = [
            {"__oid__": "507f1f77bcf86cd799439011"},
            {"__int__": 7},
            {"__min__": None},
            {"__type__": "__vector__", "value": [1.0, 2.0]},
            {"__type__": "not a vector", "value": [1.0]},
            {"__unknown__": 1},
        ]
        for value in maps:
            fields = {key: item._pb for key, item in _helpers.encode_dict({"in": value}).items()}
            ours = firestore_client._decode_map(fields, db)
            theirs: Any = _helpers.decode_dict(fields, db)
            assert ours == theirs, value
            assert type(ours["in"]) is type(theirs["in"]), value


@pytest.mark.emulator
class TestRunTransaction:
    def test_a_unit_of_work_that_reads_nothing_commits_without_beginning(
        self, db: firestore.Client
    ) -> None:
        """Writes only: one atomic Commit, no BeginTransaction; a failed precondition fails
        every write of it."""
        counter = count_rpcs(db)
        a, b = db.collection("c").document("a"), db.collection("c").document("b")

        def write(tx: firestore.Transaction) -> str:
            buffer_replacement(tx, a, {"n": 1})
            tx.set(b, {"n": 1})
            return "done"

        assert run_transaction(db, write, max_attempts=3) == "done"
        assert dict(counter.calls) == {"Commit": 1}

        def write_again(tx: firestore.Transaction) -> None:
            tx.set(b, {"n": 2})
            buffer_replacement(tx, a, {"n": 2})

        with pytest.raises(gexc.AlreadyExists):  # a exists: b is not written either
            run_transaction(db, write_again, max_attempts=3)
        assert b.get().get("n") == 1

    def test_a_read_begins_it_and_a_failure_rolls_it_back(self, db: firestore.Client) -> None:
        """A read through it begins the transaction, which then commits; when the work
        raises after reading, the transaction is rolled back and nothing is written."""
        counter = count_rpcs(db)
        ref = db.collection("c").document("r")

        def read_then_write(tx: firestore.Transaction) -> None:
            (snapshot,) = read_through(tx, [ref])
            tx.set(ref, {"n": (snapshot.get("n") if snapshot.exists else 0) + 1})

        run_transaction(db, read_then_write, max_attempts=3)
        assert dict(counter.calls) == {"BeginTransaction": 1, "BatchGetDocuments": 1, "Commit": 1}

        def read_then_fail(tx: firestore.Transaction) -> None:
            read_then_write(tx)
            raise RuntimeError("handler fault")

        counter.reset()
        with pytest.raises(RuntimeError):
            run_transaction(db, read_then_fail, max_attempts=3)
        assert counter.calls["Rollback"] == 1
        assert ref.get().get("n") == 1

    def test_an_aborted_transaction_runs_again(self, db: firestore.Client) -> None:
        """Aborted after it began: run again, up to `max_attempts` runs, then raised."""
        ref = db.collection("c").document("aborted")
        runs: list[int] = []

        def aborted_once(tx: firestore.Transaction) -> int:
            read_through(tx, [ref])
            runs.append(1)
            if len(runs) == 1:
                raise gexc.Aborted("contention")
            return len(runs)

        assert run_transaction(db, aborted_once, max_attempts=3) == 2

        def always_aborted(tx: firestore.Transaction) -> None:
            read_through(tx, [ref])
            runs.append(1)
            raise gexc.Aborted("contention")

        runs.clear()
        with pytest.raises(gexc.Aborted):
            run_transaction(db, always_aborted, max_attempts=3)
        assert len(runs) == 3
