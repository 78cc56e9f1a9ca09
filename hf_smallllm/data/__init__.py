"""Data for training: document sources, tokenize-and-pack, curricula, the resumable batch stream, collation."""

from .collator import PackedCollator
from .documents import DocumentSource
from .packing import IGNORE_INDEX, DocumentPacker, PackedRow, SourceExhausted
from .schedules import LengthPhase, MixturePhase, MixtureSchedule, SequenceLengthSchedule
from .stream import PackedBatchStream, realised_proportions

__all__ = [
    "DocumentPacker",
    "DocumentSource",
    "IGNORE_INDEX",
    "LengthPhase",
    "MixturePhase",
    "MixtureSchedule",
    "PackedBatchStream",
    "PackedCollator",
    "PackedRow",
    "SequenceLengthSchedule",
    "SourceExhausted",
    "realised_proportions",
]
