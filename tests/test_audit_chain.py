"""The canonical encoding and the hash chain, without a database."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from censusdrop.audit import chain
from censusdrop.audit.events import AuditEvent
from censusdrop.audit.schema import ROW_COLUMNS

AT = dt.datetime(2020, 6, 15, 8, 30, 0, 123456, tzinfo=dt.UTC)

optional_text = st.none() | st.text()


@st.composite
def rows(draw: st.DrawFn) -> tuple[object, ...]:
    return (
        draw(st.integers(min_value=1, max_value=2**62)),
        chain.format_time(draw(st.datetimes(timezones=st.just(dt.UTC)))),
        *(draw(optional_text) for _ in range(5)),  # account .. remote
        draw(st.text(min_size=1)),  # action
        draw(optional_text),  # path
        draw(optional_text),  # version
        draw(st.none() | st.integers(min_value=0, max_value=2**63 - 1)),
        draw(optional_text),  # digest
        draw(st.text(min_size=1)),  # outcome
        draw(st.text()),  # details text
    )


def test_row_fields_match_the_table_columns() -> None:
    assert chain.ROW_FIELDS == ROW_COLUMNS


def test_genesis_hash_is_a_fixed_constant() -> None:
    expected = hashlib.sha256(b"censusdrop audit chain v1 genesis").hexdigest()
    assert expected == chain.GENESIS_HASH


@given(rows())
def test_fast_canonical_text_equals_sorted_key_json(row: tuple[object, ...]) -> None:
    assert chain.canonical_text(row) == chain.reference_canonical_text(row)


def test_canonical_text_has_sorted_keys_version_and_null_fields() -> None:
    row = chain.seal(
        AuditEvent("login", at=AT, account="专家甲"), 7, chain.GENESIS_HASH
    )
    content = json.loads(chain.canonical_text(row))

    assert list(content) == sorted(content)
    assert content["v"] == chain.CHAIN_VERSION
    assert content["seq"] == 7
    assert content["at"] == "2020-06-15T08:30:00.123456Z"
    assert content["account"] == "专家甲"
    assert content["path"] is None
    assert "专家甲" in chain.canonical_text(row)


def test_time_is_utc_with_microseconds_whatever_the_zone() -> None:
    shanghai = dt.timezone(dt.timedelta(hours=8))
    local = dt.datetime(2020, 6, 15, 16, 30, tzinfo=shanghai)

    assert chain.format_time(local) == "2020-06-15T08:30:00.000000Z"
    assert chain.parse_time("2020-06-15T08:30:00.000000Z") == local


def test_each_hash_covers_the_previous_hash_and_the_content() -> None:
    first = chain.seal(AuditEvent("login", at=AT), 1, chain.GENESIS_HASH)
    second = chain.seal(AuditEvent("list", at=AT), 2, first[-1])

    raw = bytes.fromhex(first[-1]) + chain.canonical_text(second).encode()
    assert second[-2] == first[-1]
    assert second[-1] == hashlib.sha256(raw).hexdigest()
    assert chain.row_is_sealed(first) and chain.row_is_sealed(second)


def test_changing_any_field_breaks_the_seal() -> None:
    row = chain.seal(
        AuditEvent("download_end", at=AT, account="a", bytes=10, details={"k": 1}),
        3,
        chain.GENESIS_HASH,
    )
    for index in range(14):
        value = row[index]
        if isinstance(value, int):
            changed: object = value + 1
        else:
            changed = (value or "") + "x"
        tampered = (*row[:index], changed, *row[index + 1 :])
        assert not chain.row_is_sealed(tampered), chain.ROW_FIELDS[index]


def test_a_row_with_wrong_types_is_not_sealed_rather_than_an_error() -> None:
    row = list(chain.seal(AuditEvent("x", at=AT, bytes=5), 1, chain.GENESIS_HASH))
    row[10] = 5.0
    assert not chain.row_is_sealed(row)
    row[10] = "5"
    assert not chain.row_is_sealed(row)


def test_details_are_stored_as_canonical_json_text() -> None:
    text = chain.encode_details({"b": [1, 2], "a": "武汉"})
    assert text == '{"a":"武汉","b":[1,2]}'


@pytest.mark.parametrize(
    "event",
    [
        AuditEvent("x", details={"bad": object()}),
        AuditEvent("x", details={"nan": float("nan")}),
        AuditEvent("x", bytes=-1),
        AuditEvent("x", bytes=2**63),
        AuditEvent(""),
    ],
)
def test_events_that_cannot_be_stored_are_refused_at_once(event: AuditEvent) -> None:
    with pytest.raises(ValueError):
        chain.check_event(event)


@pytest.mark.parametrize(
    "event",
    [
        AuditEvent("x", bytes=True),
        AuditEvent("x", account=42),  # type: ignore[arg-type]
    ],
)
def test_fields_of_the_wrong_type_are_refused(event: AuditEvent) -> None:
    with pytest.raises(TypeError):
        chain.check_event(event)


def test_nul_and_undecodable_bytes_are_escaped_so_any_database_stores_them() -> None:
    name = b"/\xb1\xa8\xb8\xe6.pdf".decode("utf-8", "surrogateescape")  # GBK
    event = AuditEvent("list", at=AT, account="a\x00b", path=name, details={"p": name})

    row = chain.seal(event, 1, chain.GENESIS_HASH)

    assert row[2] == "a\N{REPLACEMENT CHARACTER}b"
    assert row[8] == "/\\xb1\\xa8\\xb8\\xe6.pdf"
    for value in row:
        if isinstance(value, str):
            value.encode("utf-8")
    assert chain.row_is_sealed(row)


events = st.builds(
    AuditEvent,
    action=st.text(min_size=1),
    outcome=st.text(min_size=1),
    at=st.datetimes(timezones=st.just(dt.UTC) | st.timezones()),
    account=optional_text,
    path=optional_text,
    bytes=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    details=st.dictionaries(st.text(), st.none() | st.integers() | st.text()),
)


@given(st.lists(events, max_size=5), st.integers(min_value=0, max_value=2**40))
def test_sealing_a_batch_gives_the_rows_of_sealing_one_by_one(
    batch: list[AuditEvent], after: int
) -> None:
    expected, prev = [], chain.GENESIS_HASH
    for seq, event in enumerate(batch, start=after + 1):
        expected.append(chain.seal(event, seq, prev))
        prev = expected[-1][-1]

    rows = chain.seal_all(batch, after, chain.GENESIS_HASH)

    assert rows == expected
    assert all(chain.row_is_sealed(row) for row in rows)


def test_a_seal_is_the_hash_of_the_reference_encoding() -> None:
    event = AuditEvent("list", at=AT, path="/a\tb", details={"k": '"q"', "n": 1})

    row = chain.seal(event, 7, chain.GENESIS_HASH)

    content = bytes.fromhex(chain.GENESIS_HASH)
    content += chain.reference_canonical_text(row).encode()
    assert row[-1] == hashlib.sha256(content).hexdigest()
    assert row[13] == '{"k":"\\"q\\"","n":1}'
