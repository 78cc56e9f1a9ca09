"""Data for training: document sources, token streams (prepared shards or on the fly), packing, curricula, the
resumable batch stream, collation."""

from .collator import PackedCollator
from .documents import DocumentSource
from .packing import IGNORE_INDEX, PackedRow, pack_rows
from .schedules import LengthPhase, MixturePhase, MixtureSchedule, SequenceLengthSchedule, StreamStage
from .shards import PreparedDataError, PreparedTokens, open_prepared, read_manifest, verify_prepared
from .stream import PackedBatchStream, StepPlan, realised_proportions
from .tokens import OnTheFlyTokens, encode_documents, tokenizer_identity

__all__ = [
    "IGNORE_INDEX",
    "DocumentSource",
    "LengthPhase",
    "MixturePhase",
    "MixtureSchedule",
    "OnTheFlyTokens",
    "PackedBatchStream",
    "PackedCollator",
    "PackedRow",
    "PreparedDataError",
    "PreparedTokens",
    "SequenceLengthSchedule",
    "StepPlan",
    "StreamStage",
    "encode_documents",
    "open_prepared",
    "pack_rows",
    "read_manifest",
    "realised_proportions",
    "tokenizer_identity",
    "verify_prepared",
]
