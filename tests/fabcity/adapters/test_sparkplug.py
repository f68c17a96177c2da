from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from fabcity.adapters import sparkplug_b as pb
from fabcity.adapters.base import Message, Refused
from fabcity.adapters.routing import not_from_devices
from fabcity.adapters.sparkplug import host_state
from fabcity.core.db import transaction
from fabcity.core.models import DeadLetter
from fabcity.ingest.intake import store
from schemas.events import EventType
from tests.fabcity.adapters.support import T0, device, events, message, run
from tests.fixtures.devices import raw

# Bytes from FORMATS.md, encoded by pysparkplug 0.6.1 (a real protobuf encoder).
NBIRTH = base64.b64decode(
    "CKCh0PG3MxISCgViZFNlcRigodDxtzMgBFgDEiEKFE5vZGUgQ29udHJvbC9SZWJpcnRoGKCh0PG3MyALcAAS"
    "MAoYUHJvcGVydGllcy9IYXJkd2FyZSBNYWtlGKCh0PG3MyAMegtSYXNwYmVycnlQaRgA"
)
DDATA = base64.b64decode("CID20/G3MxIOEAEYgPbT8bczZQCAO0YSCxAEGID20/G3M3ABGAI=")
NODE = "spBv1.0/fablab-a/{}/gw-cnc-01"
DEV = NODE + "/shopbot-1"
MS = 1767348960000


def test_the_decoder_reads_real_encoder_bytes() -> None:
    birth = pb.decode(NBIRTH)
    assert (birth.timestamp, birth.seq) == (1767348900000, 0)
    assert [(m.name, m.datatype, m.value) for m in birth.metrics] == [
        ("bdSeq", pb.INT64, 3),
        ("Node Control/Rebirth", pb.BOOLEAN, False),
        ("Properties/Hardware Make", pb.STRING, "RaspberryPi"),
    ]
    data = pb.decode(DDATA)
    assert data.seq == 2
    assert [(m.alias, m.value) for m in data.metrics] == [(1, 12000.0), (4, True)]


@pytest.mark.parametrize(
    ("datatype", "value"),
    [(pb.INT8, -5), (pb.INT16, -300), (pb.INT32, -70000), (pb.INT64, -(2**40)), (pb.UINT32, 7)],
)
def test_signed_values_survive_the_unsigned_wire_fields(datatype: int, value: int) -> None:
    raw = pb.encode(pb.Payload(MS, 1, (pb.Metric("x", None, MS, datatype, value),)))
    assert pb.decode(raw).metrics[0].value == value


def test_garbage_is_a_decode_error() -> None:
    with pytest.raises(pb.DecodeError):
        pb.decode(b"\x12\xff\xff")


def birth(seq: int, metrics: list[pb.Metric], bdseq: int | None = None) -> bytes:
    extra = [pb.Metric("bdSeq", None, MS, pb.INT64, bdseq)] if bdseq is not None else []
    return pb.encode(pb.Payload(MS, seq, (*extra, *metrics)))


def dbirth(seq: int) -> bytes:
    return birth(
        seq,
        [
            pb.Metric("Spindle/RPM", 1, MS, pb.FLOAT, 0.0),
            pb.Metric("Energy", 2, MS, pb.DOUBLE, 100.0),
            pb.Metric("Running", 4, MS, pb.BOOLEAN, False),
        ],
    )


def ddata(seq: int, at_ms: int, **by_alias: float | bool) -> bytes:
    metrics = []
    for alias, value in by_alias.items():
        number = int(alias.removeprefix("a"))
        kind = pb.BOOLEAN if isinstance(value, bool) else pb.DOUBLE
        metrics.append(pb.Metric(None, number, at_ms, kind, value))
    return pb.encode(pb.Payload(at_ms, seq, tuple(metrics)))


def test_alias_only_data_resolves_through_the_birth_and_makes_jobs_and_energy() -> None:
    dev = device(
        "sparkplug",
        group_id="fablab-a",
        edge_node_id="gw-cnc-01",
        device_id="shopbot-1",
        energy_metric="Energy",
        energy_unit="kWh",
        job_active_metric="Running",
    )
    decoded = run(
        dev,
        [
            message(NODE.format("NBIRTH"), NBIRTH),
            message(DEV.format("DBIRTH"), dbirth(1)),
            message(DEV.format("DDATA"), ddata(2, MS + 1000, a4=True)),
            message(DEV.format("DDATA"), ddata(3, MS + 3_600_000, a2=102.5, a4=False)),
        ],
    )
    assert decoded[1].online is True
    out = events(decoded)
    kinds = [e.type for e in out]
    assert kinds == [EventType.device_status, EventType.meter_reading, EventType.machine_job]
    assert out[1].data == {"energy_kwh": pytest.approx(2.5)}
    job = out[2].data
    assert datetime.fromisoformat(job["started"]) == datetime.fromtimestamp((MS + 1000) / 1000, UTC)
    assert datetime.fromisoformat(job["ended"]) == datetime.fromtimestamp(
        (MS + 3_600_000) / 1000, UTC
    )


def test_a_job_timed_by_receipt_says_its_hours_are_modelled() -> None:
    # The spec asks for timestamps; a payload without any leaves only the receive time, which
    # a backlog or a restart bunches up: the job's start is then `modelled`, as elsewhere.
    dev = device(
        "sparkplug",
        group_id="fablab-a",
        edge_node_id="gw-cnc-01",
        device_id="shopbot-1",
        job_active_metric="Running",
    )
    untimed = [pb.Metric(None, 4, None, pb.BOOLEAN, v) for v in (True, False)]
    timed = [pb.Metric(None, 4, MS + s * 1000, pb.BOOLEAN, v) for s, v in ((1, True), (9, False))]
    decoded = run(
        dev,
        [
            message(DEV.format("DBIRTH"), dbirth(1)),
            message(DEV.format("DDATA"), pb.encode(pb.Payload(None, 2, (untimed[0],))), at=10),
            message(DEV.format("DDATA"), pb.encode(pb.Payload(None, 3, (untimed[1],))), at=70),
            message(DEV.format("DDATA"), pb.encode(pb.Payload(None, 4, (timed[0],)))),
            message(DEV.format("DDATA"), pb.encode(pb.Payload(None, 5, (timed[1],)))),
        ],
    )
    by_receipt, by_clock = [e.data for e in events(decoded) if e.type is EventType.machine_job]
    assert by_receipt["modelled"] == ["started"]
    assert "modelled" not in by_clock


def test_an_unknown_alias_is_refused() -> None:
    dev = device("sparkplug", group_id="fablab-a", edge_node_id="gw-cnc-01", device_id="shopbot-1")
    with pytest.raises(Refused, match="alias 4"):
        run(dev, [message(DEV.format("DDATA"), ddata(2, MS, a4=True))])


def ndeath(bdseq: int) -> bytes:
    return pb.encode(pb.Payload(MS, None, (pb.Metric("bdSeq", None, MS, pb.INT64, bdseq),)))


def test_ndeath_takes_node_and_devices_offline_unless_it_is_a_stale_will() -> None:
    node = device("sparkplug", group_id="fablab-a", edge_node_id="gw-cnc-01")
    child = device(
        "sparkplug", group_id="fablab-a", edge_node_id="gw-cnc-01", device_id="shopbot-1"
    )
    stream = [
        message(NODE.format("NBIRTH"), NBIRTH),  # bdSeq 3
        message(DEV.format("DBIRTH"), dbirth(1)),
        message(NODE.format("NDEATH"), ndeath(2)),  # an earlier session's will: ignored
        message(NODE.format("NDEATH"), ndeath(3)),
    ]
    assert [d.online for d in run(node, stream)] == [True, None, None, False]
    assert [d.online for d in run(child, stream)] == [None, True, None, False]


def test_ddeath_takes_only_its_device_offline() -> None:
    child = device("sparkplug", group_id="g", edge_node_id="n", device_id="d1")
    out = run(
        child,
        [
            message("spBv1.0/g/DBIRTH/n/d1", dbirth(1)),
            message("spBv1.0/g/DDEATH/n/d1", pb.encode(pb.Payload(MS, 2, ()))),
        ],
    )
    assert [d.online for d in out] == [True, False]


def test_the_node_counts_seq_gaps_across_all_its_messages() -> None:
    node = device("sparkplug", group_id="g", edge_node_id="n")
    decoded = run(
        node,
        [
            message("spBv1.0/g/NBIRTH/n", birth(0, [], bdseq=1)),
            message("spBv1.0/g/DBIRTH/n/d1", dbirth(1)),
            message("spBv1.0/g/DDATA/n/d1", ddata(2, MS, a1=5.0)),
            message("spBv1.0/g/DDATA/n/d1", ddata(5, MS, a1=6.0)),  # 3 and 4 lost
            message("spBv1.0/g/DDATA/n/d1", ddata(6, MS, a1=7.0)),
        ],
    )
    assert decoded[-1].state["seq_gaps"] == 1
    assert decoded[-1].state["seq"] == 6


def test_host_state_topics_are_told_apart_from_node_and_device_topics() -> None:
    assert host_state("spBv1.0/STATE/scada-1")
    assert not_from_devices("spBv1.0/STATE/scada-1")
    # A node of a group that happens to be named STATE has four levels: a node's message.
    assert not host_state("spBv1.0/STATE/NBIRTH/gw-1")
    assert not host_state(NODE.format("NBIRTH"))
    assert not host_state("STATE/scada-1")  # Sparkplug 2.2's form, outside spBv1.0/#


def test_a_host_applications_state_is_left_alone_not_dead_lettered(
    factory: sessionmaker[Session],
) -> None:
    """The bridge's default subscription `spBv1.0/#` receives every host's retained STATE
    birth and death (Sparkplug 3.0, JSON). They are no device's: not refused, not stored.
    An unregistered node's birth on the same subscription still is (the control)."""
    host = "spBv1.0/STATE/scada-1"
    unknown_node = "spBv1.0/fablab-z/NBIRTH/gw-unregistered"
    with transaction(factory) as session:
        stored = store(
            session,
            [
                Message(host, raw("sparkplug-state-birth.json"), T0),
                Message(host, raw("sparkplug-state-death.json"), T0),
                Message(unknown_node, NBIRTH, T0),
            ],
        )
    assert [m.topic for m, _ in stored.dead] == [unknown_node]
    assert stored.result.accepted == 0
    with factory() as session:
        assert session.scalars(select(DeadLetter.topic)).all() == [unknown_node]
