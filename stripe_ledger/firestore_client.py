"""The Firestore adapter: the client of one instance, what counts as Firestore being
unavailable, and the few client internals the ledger must touch, all in this one module.

The client library retries an unreachable Firestore for 60 s per call by default (300 s for
reads), so a network cut would hold each delivery for minutes before Stripe got its 503.
Here every RPC, its retries included, is bounded by `firestore_timeout_seconds`. And after a
cut, gRPC waits up to two minutes between reconnection attempts by default, answering 503
long after Firestore is back; the channel here retries every two seconds at most. Its
streams (BatchGetDocuments, RunQuery) are received by the thread that called, not handed
over by a thread of the channel's (`_CHANNEL_OPTIONS`).

Every Firestore call of the ledger, the outbox and the handlers' reads goes through
`translated`, which turns the errors that say "Firestore is not available right now" into
`LedgerUnavailable`, so that no caller has to remember which ones they are.

Three costs of the library are avoided here too: `run_transaction` begins a transaction only
when something reads through it, `buffer_replacement` and `buffer_update` encode a written
document straight into its protobuf, and `commit_writes` and `get_documents` send a delivery's
RPCs without converting them to proto-plus and back (one document with a unary GetDocument);
`get_documents` also decodes plain values itself, when they are first asked for, without the
library's deep copies, and `fields_of` reads them (docs/scaling.md, "Where the CPU goes").

Over 400 lines on purpose: one job, the adapter. Every internal of google-cloud-firestore
the project relies on is here and nowhere else, so an upgrade of the library is checked
against this one file (and `tests/test_firestore_client.py`, which compares each shortcut
with what the library does).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import google.auth.exceptions
import grpc
import grpc.experimental
from google.api_core import datetime_helpers
from google.api_core import exceptions as gexc
from google.api_core.gapic_v1 import routing_header
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers, base_client, transforms
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.types import document as document_types
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.cloud.firestore_v1.types import write as write_types
from proto.datetime_helpers import DatetimeWithNanoseconds  # the class the library returns

from stripe_ledger.config import Settings
from stripe_ledger.errors import LedgerUnavailable

__all__ = [
    "EMULATOR_PROJECT",
    "UNAVAILABLE",
    "Snapshot",
    "bound_rpc_time",
    "buffer_replacement",
    "buffer_update",
    "buffered_paths",
    "commit_writes",
    "create_client",
    "create_document",
    "fields_of",
    "get_documents",
    "is_unavailable",
    "read_through",
    "run_transaction",
    "translated",
    "write_count",
]

Snapshot = firestore.DocumentSnapshot[firestore.DocumentReference]
"""A document as read."""

EMULATOR_PROJECT = "demo-stripe-ledger"
"""The project used against the emulator when GOOGLE_CLOUD_PROJECT is unset."""

UNAVAILABLE: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.Aborted,
    gexc.Unknown,
    gexc.Cancelled,
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.RetryError,
    google.auth.exceptions.TransportError,
    google.auth.exceptions.RefreshError,
)
"""Errors that say nothing about the event or task: Firestore (or the credentials to reach
it) is not available right now. An attempt that meets one is given back, never counted."""

_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # By default a stream's messages are received by a thread of the channel, started
    # whenever no other call is running (at low traffic, once per call) and handing each
    # message over through a lock and the GIL. With this option the calling thread receives
    # them: a delivery arriving alone costs 10% to 30% less CPU (docs/scaling.md).
    (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
]


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means Firestore is unavailable (see `UNAVAILABLE`), including the
    client giving up on contention, which it reports as a `ValueError` chained to the last
    `Aborted`, and an error already translated."""
    if isinstance(error, (LedgerUnavailable, *UNAVAILABLE)):
        return True
    return isinstance(error, ValueError) and isinstance(error.__cause__, gexc.Aborted)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Run a Firestore call, raising `LedgerUnavailable` (naming `what`) for an error that
    means Firestore is unavailable; every other error passes unchanged."""
    try:
        yield
    except LedgerUnavailable:
        raise
    except Exception as error:
        if not is_unavailable(error):
            raise
        message = f"Firestore unavailable ({what}): {type(error).__name__}"
        raise LedgerUnavailable(message) from error


def create_client(settings: Settings, environ: Mapping[str, str]) -> firestore.Client:
    """The client for `settings` (the emulator's when FIRESTORE_EMULATOR_HOST is set)."""
    project = settings.project
    if project is None and environ.get("FIRESTORE_EMULATOR_HOST"):
        project = EMULATOR_PROJECT
    _add_channel_options()
    client = firestore.Client(project=project, database=settings.database)
    bound_rpc_time(client, settings.firestore_timeout_seconds)
    return client


def _add_channel_options() -> None:
    # The client builds its gRPC channel from these module-level option lists (the first for
    # Firestore, the second also for the emulator's channel); there is no public argument.
    for options in (base_client._DEFAULT_CHANNEL_OPTIONS, base_client._GRPC_MSG_SIZE_OPTIONS):
        for option in _CHANNEL_OPTIONS:
            if option not in options:
                options.append(option)


def bound_rpc_time(client: firestore.Client, seconds: float) -> None:
    """Limit each of `client`'s RPCs, retries included, to `seconds`.

    The generated client keeps one wrapped callable per RPC with its default retry and
    timeout; they are not configurable through a public argument, so they are set here.
    `tests/test_firestore_client.py` proves the bound against an unreachable endpoint.
    """
    for wrapped in client._firestore_api._transport._wrapped_methods.values():
        retry = getattr(wrapped, "_retry", None)
        if retry is not None:
            wrapped._retry = retry.with_timeout(seconds)
        wrapped._timeout = seconds


def write_count(tx: firestore.Transaction) -> int:
    """How many writes `tx` has buffered: the index its next write will have among the
    commit's write results."""
    return len(tx._write_pbs)


def buffered_paths(tx: firestore.Transaction) -> set[str]:
    """The paths (`collection/id/...`) of the documents `tx` has buffered writes for."""
    return {
        name.split("/documents/", 1)[-1]
        for write in tx._write_pbs
        if (name := write.update.name or write.delete or write.transform.document)
    }


def read_through(
    tx: firestore.Transaction, refs: list[firestore.DocumentReference]
) -> list[firestore.DocumentSnapshot[Any]]:
    """Read `refs` through `tx`, even when writes are already buffered in it.

    The Python client refuses any read once a write is buffered (`ReadAfterWriteError`).
    Firestore itself has no such rule: buffered writes are only sent with the commit, and
    reads in the transaction still lock what they read. So the buffered writes are set aside
    for the read and put back unchanged, in order. The caller must refuse to read a document
    among them (`buffered_paths`): the read would return its state before the write.
    """
    buffered = tx._write_pbs
    tx._write_pbs = []
    try:
        with translated("read in a transaction"):
            if not tx.in_progress:  # the first read begins it (`run_transaction`)
                tx._begin()
            return list(tx.get_all(refs))
    finally:
        tx._write_pbs = buffered + tx._write_pbs


R = TypeVar("R")


def run_transaction(
    db: firestore.Client, work: Callable[[firestore.Transaction], R], *, max_attempts: int
) -> R:
    """Run `work(tx)` and commit what it buffered in `tx`, atomically; return its result.

    The transaction begins only when `work` first reads through it (`read_through`, which
    every read of the ledger, the outbox and the handlers' `ctx.get` uses). A unit of work
    that reads nothing through it (its documents read without a lock and written with
    preconditions, as projections are) is committed as one atomic batch: no
    BeginTransaction, one round trip less. A transaction that began and whose commit is
    aborted (contention on what it read) is run again, up to `max_attempts` runs, then the
    `Aborted` is raised. When `work` or the commit raises, a begun transaction is rolled
    back and the error raised.
    """
    for run in range(1, max_attempts + 1):
        tx = db.transaction()
        try:
            result = work(tx)
            if tx.in_progress:
                tx._commit()
            elif tx._write_pbs:
                written = commit_writes(db, tx._write_pbs)
                # What the transaction's own commit leaves: each write's result, in order.
                tx.write_results = [write_types.WriteResult.wrap(pb) for pb in written]
            return result
        except gexc.Aborted:
            began = tx.in_progress
            _roll_back(tx)
            if not began or run == max_attempts:
                raise
        except BaseException:
            _roll_back(tx)
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _roll_back(tx: firestore.Transaction) -> None:
    if tx.in_progress:
        with contextlib.suppress(Exception):  # the error that got here is the one to raise
            tx._rollback()


_WRITE = write_types.Write.pb()
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# The library functions used here that have no type annotations, typed once.
_FROM_TIMESTAMP: Callable[[Any], datetime.datetime] = DatetimeWithNanoseconds.from_timestamp_pb
# A timestamp field's value: the library decodes it into api_core's class, not proto's.
_VALUE_FROM_TIMESTAMP: Callable[[Any], datetime.datetime] = (
    datetime_helpers.DatetimeWithNanoseconds.from_timestamp_pb
)
_ROUTING: Callable[[tuple[tuple[str, str], ...]], tuple[str, str]] = routing_header.to_grpc_metadata
_FROM_GRPC: Callable[[grpc.RpcError], gexc.GoogleAPICallError] = gexc.from_grpc_error
_SENTINELS = (transforms.Sentinel, transforms._ValueList, transforms._NumericValue)


def create_document(ref: firestore.DocumentReference, data: Mapping[str, Any]) -> Any:
    """`ref.create(data)`, encoded as `buffer_replacement` does: one Commit; the update time
    of the document created. Raises `AlreadyExists` when it exists."""
    batch = ref._client.batch()
    buffer_replacement(batch, ref, data)
    (result,) = commit_writes(ref._client, batch._write_pbs)
    return _FROM_TIMESTAMP(result.update_time)


def commit_writes(client: firestore.Client, writes: list[Any]) -> list[Any]:
    """Commit `writes` (what a batch or transaction buffered) atomically, outside any
    transaction; their WriteResult protobufs.

    The same Commit as `WriteBatch.commit` (see `_rpc`), without the library's conversions of
    the request and response to proto-plus, which cost more CPU than the call itself.
    """
    # The library buffers its own writes as proto-plus messages, these as protobufs.
    raw = [getattr(write, "_pb", write) for write in writes]
    request = _COMMIT.request(database=client._database_string, writes=raw)
    response = _rpc(client, _COMMIT)(request)
    return list(response.write_results)


def fields_of(snapshot: Snapshot) -> Mapping[str, Any]:
    """The fields of `snapshot` as they were decoded ({} when it does not exist), without the
    deep copy `to_dict()` makes of them (a record's payload or a projection's object is a few
    hundred values): read them, never change them."""
    data: dict[str, Any] | None = snapshot._data
    return data if data is not None else {}


def get_documents(
    client: firestore.Client, refs: Iterable[firestore.DocumentReference]
) -> list[Snapshot]:
    """`client.get_all(refs)` outside any transaction, one snapshot per document, with what
    `_rpc` gives every call and without the library's proto-plus conversions.

    One document is read with a GetDocument, a unary call, which costs gRPC's Python less
    than the stream of a BatchGetDocuments (in the order asked, then), and whose NOT_FOUND
    answer becomes a missing snapshot without becoming an exception (`_rpc`); more with one
    BatchGetDocuments (in the order Firestore answers). A snapshot decodes its fields into
    what the library decodes (`_decode`) when they are first asked for, never copying them
    (`_Read`): a document read and never looked at costs no more (a fresh duplicate's
    projection, read along with its record).
    """
    by_path = {ref._document_path: ref for ref in refs}
    if len(by_path) == 1:
        ((path, ref),) = by_path.items()
        document = _rpc(client, _GET)(_GET.request(name=path))
        return [_missing(ref, None) if document is None else _Read(ref, document, None)]
    request = _BATCH_GET.request(database=client._database_string, documents=list(by_path))
    snapshots: list[Snapshot] = []
    for response in _rpc(client, _BATCH_GET)(request):
        read_time = _FROM_TIMESTAMP(response.read_time)
        if response.WhichOneof("result") == "found":
            found = response.found
            snapshots.append(_Read(by_path[found.name], found, read_time))
        else:
            snapshots.append(_missing(by_path[response.missing], read_time))
    return snapshots


def _missing(ref: firestore.DocumentReference, read_time: Any) -> Snapshot:
    return Snapshot(
        ref, None, exists=False, read_time=read_time, create_time=None, update_time=None
    )


class _Read(Snapshot):
    """A document `get_documents` found: the library's snapshot, whose fields are decoded
    from the `Document` protobuf when first asked for (`_decode_map`), once, and never
    copied."""

    _decoded: dict[str, Any] | None

    def __init__(self, ref: firestore.DocumentReference, document: Any, read_time: Any) -> None:
        super().__init__(
            ref,
            None,
            exists=True,
            read_time=read_time,
            create_time=_FROM_TIMESTAMP(document.create_time),
            update_time=_FROM_TIMESTAMP(document.update_time),
        )
        self._fields: Any = document.fields

    @property
    def _data(self) -> dict[str, Any] | None:
        if self._fields is not None:
            decoded = _decode_map(self._fields, self._reference._client)
            self._decoded, self._fields = cast("dict[str, Any]", decoded), None
        return self._decoded

    @_data.setter
    def _data(self, value: dict[str, Any] | None) -> None:  # the constructor's: None
        self._decoded, self._fields = value, None


def _decode(value: Any, client: firestore.Client) -> Any:
    """The Python value of the `Value` protobuf `value`, as the library decodes it: plain
    values here, the rarer kinds (bytes, references, geo points) by the library."""
    kind = value.WhichOneof("value_type")
    if kind == "string_value":
        return value.string_value
    if kind == "map_value":
        return _decode_map(value.map_value.fields, client)
    if kind == "integer_value":
        return value.integer_value
    if kind == "boolean_value":
        return value.boolean_value
    if kind == "null_value":
        return None
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [_decode(item, client) for item in value.array_value.values]
    if kind == "timestamp_value":
        return _VALUE_FROM_TIMESTAMP(value.timestamp_value)
    return _helpers.decode_value(value, client)


def _decode_map(fields: Any, client: firestore.Client) -> Any:
    # The maps the library decodes into other types are left to it: a vector's map has a
    # `__type__` key, a BSON value's has one key only, starting `__` (`BSONType._from_dict`).
    if "__type__" in fields or (len(fields) == 1 and next(iter(fields)).startswith("__")):
        return _helpers.decode_dict(fields, client)
    return {key: _decode(item, client) for key, item in fields.items()}


@dataclass(frozen=True)
class _Method:
    """A Firestore RPC called with plain protobufs: its name in the generated transport and
    on the wire, its request and response types, whether it answers with a stream, the
    request field its routing header names (as the generated client's), and whether its
    NOT_FOUND means an answer (a missing document: None) rather than an error."""

    name: str
    wire_name: str
    request: Any
    response: Any
    streams: bool = False
    routed_by: str = "database"
    absent_is_none: bool = False


_COMMIT = _Method(
    "commit", "Commit", firestore_types.CommitRequest.pb(), firestore_types.CommitResponse.pb()
)
_GET = _Method(
    "get_document",
    "GetDocument",
    firestore_types.GetDocumentRequest.pb(),
    document_types.Document.pb(),
    routed_by="name",
    absent_is_none=True,
)
_BATCH_GET = _Method(
    "batch_get_documents",
    "BatchGetDocuments",
    firestore_types.BatchGetDocumentsRequest.pb(),
    firestore_types.BatchGetDocumentsResponse.pb(),
    streams=True,
)


def _rpc(client: firestore.Client, method: _Method) -> Callable[[Any], Any]:
    """`method` of `client`'s current transport (tests swap it), built once per transport.

    The call goes over the client's own channel, with the metadata, retry policy and time
    bound (`bound_rpc_time`) the generated client would use, and raises the library's
    exceptions (`AlreadyExists`, `FailedPrecondition`, ...). A stream is read whole inside
    each attempt, so a retry reads it again from the start. A NOT_FOUND that is an answer
    (`absent_is_none`) returns None as soon as gRPC reports it, without the library's
    conversion of an error (its status details parsed, a new exception raised through the
    retry), a tenth to a quarter of such a read's CPU.
    """
    transport = client._firestore_api._transport
    cache = client.__dict__.setdefault("_stripe_ledger_rpcs", {})
    cached = cache.get(method.name)
    if cached is not None and cached[0] is transport:
        return cast("Callable[[Any], Any]", cached[1])
    wrapped = transport._wrapped_methods[getattr(transport, method.name)]
    channel = transport.grpc_channel
    kind = channel.unary_stream if method.streams else channel.unary_unary
    stub = kind(
        f"/google.firestore.v1.Firestore/{method.wire_name}",
        request_serializer=method.request.SerializeToString,
        response_deserializer=method.response.FromString,
    )
    common = (*client._rpc_metadata, *wrapped._default_metadata)
    field, absent_is_none = method.routed_by, method.absent_is_none
    seconds, retry = wrapped._timeout, wrapped._retry

    def call(request: Any) -> Any:
        deadline = None if seconds is None else time.monotonic() + seconds
        metadata = (*common, _ROUTING(((field, getattr(request, field)),)))

        def attempt() -> Any:
            # Each attempt gets what is left of the call's time, as the library's do.
            left = None if deadline is None else max(deadline - time.monotonic(), 0.01)
            try:
                answer = stub(request, timeout=left, metadata=metadata)
                return list(answer) if method.streams else answer
            except grpc.RpcError as error:
                if absent_is_none and error.code() is grpc.StatusCode.NOT_FOUND:
                    return None
                raise _FROM_GRPC(error) from error

        return retry(attempt)() if retry is not None else attempt()

    cache[method.name] = (transport, call)
    return call


def buffer_replacement(
    tx: firestore.Transaction | firestore.WriteBatch,
    ref: firestore.DocumentReference,
    data: Mapping[str, Any],
    *,
    update_time: Any = None,
) -> None:
    """Buffer in `tx` (a transaction or a batch) a write that replaces `ref`'s whole content
    with `data`, on condition that the document still has `update_time` (a snapshot's), or,
    without one, that it still does not exist.

    The client library builds every value of a write as a proto-plus message, which costs
    more CPU than anything else a delivery does (a projection's nested `object` map is
    hundreds of values); plain data (None, bool, int, float, str, lists and dicts of them)
    is written here straight into the protobuf, anything else through the library's own
    encoding, and data holding a transform (`SERVER_TIMESTAMP`, `Increment`) is left to the
    library whole. `tests/test_firestore_client.py` checks both encodings agree.
    """
    write = _WRITE()
    write.update.name = ref._document_path
    try:
        for key, value in data.items():
            _encode(write.update.fields[key], value)
        writes = [write]
    except _NeedsTheClient:
        writes = [pb._pb for pb in _helpers.pbs_for_set_no_merge(ref._document_path, dict(data))]
        write = writes[0]
    if update_time is None:
        write.current_document.exists = False
    else:
        write.current_document.update_time.CopyFrom(update_time.timestamp_pb())
    tx._add_write_pbs(writes)


def buffer_update(
    tx: firestore.Transaction | firestore.WriteBatch,
    ref: firestore.DocumentReference,
    fields: Mapping[str, Any],
    *,
    update_time: Any,
) -> None:
    """Buffer in `tx` a write that sets `fields` of `ref` (each key one field name, not a
    dotted path) and leaves its other fields as they are, on condition that the document
    still has `update_time` (a snapshot's or a write's). Encoded as `buffer_replacement`
    encodes; data holding a transform is left to the library's `update`."""
    write = _WRITE()
    write.update.name = ref._document_path
    try:
        for key, value in fields.items():
            _encode(write.update.fields[key], value)
    except _NeedsTheClient:
        paths = {FieldPath(key).to_api_repr(): value for key, value in fields.items()}
        tx.update(ref, paths, option=ref._client.write_option(last_update_time=update_time))
        return
    write.update_mask.field_paths.extend(sorted(FieldPath(key).to_api_repr() for key in fields))
    write.current_document.update_time.CopyFrom(update_time.timestamp_pb())
    tx._add_write_pbs([write])


class _NeedsTheClient(Exception):
    """The data holds a transform, which only the client library turns into a write."""


def _encode(target: Any, value: Any) -> None:
    """Set the `Value` protobuf `target` to `value`."""
    kind = type(value)
    if value is None:
        target.null_value = 0
    elif kind is str:
        target.string_value = value
    elif kind is bool:
        target.boolean_value = value
    elif kind is int:
        target.integer_value = value
    elif kind is float:
        target.double_value = value
    elif kind is dict:
        target.map_value.SetInParent()  # an empty map is a map, not an unset value
        fields = target.map_value.fields
        for key, item in value.items():
            _encode(fields[key], item)
    elif kind is list:
        target.array_value.SetInParent()
        values = target.array_value.values
        for item in value:
            _encode(values.add(), item)
    elif isinstance(value, str):  # a subclass: a StrEnum is stored as its value
        target.string_value = value
    elif isinstance(value, datetime.datetime):
        stamp = getattr(value, "timestamp_pb", None)  # one read back: it keeps nanoseconds
        if stamp is not None:
            target.timestamp_value.CopyFrom(stamp())
        else:
            # What the library writes: a naive time taken as UTC, whole microseconds.
            aware = value if value.utcoffset() is not None else value.replace(tzinfo=datetime.UTC)
            delta = aware - _EPOCH
            target.timestamp_value.seconds = delta.days * 86_400 + delta.seconds
            target.timestamp_value.nanos = delta.microseconds * 1_000
    elif isinstance(value, _SENTINELS):
        raise _NeedsTheClient
    else:
        target.CopyFrom(_helpers.encode_value(value)._pb)
