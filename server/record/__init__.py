"""The encrypted, tamper-evident case record: sealed events per session in a hash chain."""

from __future__ import annotations

from server.record.chain import (
    BreakKind,
    ChainBreak,
    ChainHead,
    RecordHeader,
    StoredRecord,
    VerifyResult,
    verify_records,
)
from server.record.crypto import (
    DecryptionFailed,
    Keyring,
    RecordKeyError,
    UnknownKeyId,
    keyring_from_environment,
    load_keyring,
    load_or_create_keyring,
    rotate_key_file,
)
from server.record.store import (
    CaseEvent,
    CaseRecordError,
    CaseRecordStore,
    RecordUnreadable,
    SessionShredded,
    SqliteCaseRecordStore,
)

__all__ = [
    "BreakKind",
    "CaseEvent",
    "CaseRecordError",
    "CaseRecordStore",
    "ChainBreak",
    "ChainHead",
    "DecryptionFailed",
    "Keyring",
    "RecordHeader",
    "RecordKeyError",
    "RecordUnreadable",
    "SessionShredded",
    "SqliteCaseRecordStore",
    "StoredRecord",
    "UnknownKeyId",
    "VerifyResult",
    "keyring_from_environment",
    "load_keyring",
    "load_or_create_keyring",
    "rotate_key_file",
    "verify_records",
]
