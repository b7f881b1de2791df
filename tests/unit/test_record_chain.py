"""server.record.chain: the hash chain and the verifier naming each kind of break."""

from __future__ import annotations

import dataclasses

from server.record.chain import (
    GENESIS_HASH,
    BreakKind,
    ChainBreak,
    ChainHead,
    RecordHeader,
    StoredRecord,
    chain_hash,
    link,
    verify_records,
)


def build(count: int) -> list[StoredRecord]:
    records: list[StoredRecord] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        header = RecordHeader(seq, 1_700_000_000.0 + seq, f"s{seq % 2}", "chat", "mk-a")
        record = link(prev, header, bytes([seq]) * 12, f"sealed-{seq}".encode())
        records.append(record)
        prev = record.hash
    return records


def head_of(records: list[StoredRecord]) -> ChainHead:
    return ChainHead(records[-1].header.seq, records[-1].hash)


def test_canonical_header_is_deterministic_and_covers_every_field() -> None:
    header = RecordHeader(7, 1.5, "abc", "joined", "mk-a")
    assert header.canonical() == (
        b'{"at":1.5,"key_id":"mk-a","kind":"joined","seq":7,"session":"abc"}'
    )
    for change in (
        {"seq": 8},
        {"at": 1.6},
        {"session_ref": "abd"},
        {"kind": "left"},
        {"key_id": "b"},
    ):
        other = dataclasses.replace(header, **change)  # type: ignore[arg-type]
        assert chain_hash(GENESIS_HASH, other, b"n" * 12, b"c") != chain_hash(
            GENESIS_HASH, header, b"n" * 12, b"c"
        )


def test_untouched_chain_and_empty_store_verify() -> None:
    records = build(6)
    result = verify_records(records, head_of(records))
    assert result.ok
    assert result.records == 6
    assert "6 records verified" in result.describe()
    assert verify_records([], None).ok


def test_flipped_ciphertext_byte_is_content_altered_at_that_record() -> None:
    records = build(5)
    ciphertext = records[2].ciphertext
    records[2] = dataclasses.replace(
        records[2], ciphertext=ciphertext[:3] + bytes([ciphertext[3] ^ 0x01]) + ciphertext[4:]
    )
    result = verify_records(records, head_of(records))
    assert not result.ok
    assert [(b.seq, b.kind) for b in result.breaks] == [(3, BreakKind.CONTENT_ALTERED)]
    assert "record 3: content altered" in result.describe()


def test_edited_header_is_header_altered() -> None:
    records = build(5)
    header = dataclasses.replace(records[1].header, kind="left")
    records[1] = dataclasses.replace(records[1], header=header)
    result = verify_records(records, head_of(records))
    assert [(b.seq, b.kind) for b in result.breaks] == [(2, BreakKind.HEADER_ALTERED)]


def test_deleted_record_is_missing() -> None:
    records = build(5)
    head = head_of(records)
    del records[2]
    result = verify_records(records, head)
    assert [(b.seq, b.kind) for b in result.breaks] == [(3, BreakKind.RECORD_MISSING)]


def test_deleted_last_records_are_found_through_the_head() -> None:
    records = build(5)
    head = head_of(records)
    result = verify_records(records[:3], head)
    assert [(b.seq, b.kind) for b in result.breaks] == [(4, BreakKind.RECORD_MISSING)]
    assert "records 4 to 5" in result.breaks[0].detail
    assert verify_records(records[:0], head).first_break == ChainBreak(
        1, BreakKind.RECORD_MISSING, "records 1 to 5 cut off the end"
    )


def test_swapped_records_are_out_of_order() -> None:
    records = build(6)
    records[2], records[3] = records[3], records[2]
    result = verify_records(records, head_of(build(6)))
    assert [(b.seq, b.kind) for b in result.breaks] == [(3, BreakKind.OUT_OF_ORDER)]
    assert "stored after record 4" in result.breaks[0].detail


def test_duplicated_record_is_out_of_order() -> None:
    records = build(4)
    records.insert(3, records[1])
    result = verify_records(records, head_of(records))
    assert [(b.seq, b.kind) for b in result.breaks] == [(2, BreakKind.OUT_OF_ORDER)]


def test_rewritten_and_rehashed_record_breaks_the_next_link() -> None:
    records = build(5)
    original = records[2]
    forged = link(original.prev_hash, original.header, original.nonce, b"forged body")
    records[2] = forged
    result = verify_records(records, head_of(records))
    assert [(b.seq, b.kind) for b in result.breaks] == [(4, BreakKind.LINK_BROKEN)]


def test_rewritten_last_record_is_caught_by_the_head() -> None:
    records = build(3)
    head = head_of(records)
    last = records[-1]
    records[-1] = link(last.prev_hash, last.header, last.nonce, b"forged")
    result = verify_records(records, head)
    assert [(b.seq, b.kind) for b in result.breaks] == [(3, BreakKind.LINK_BROKEN)]
