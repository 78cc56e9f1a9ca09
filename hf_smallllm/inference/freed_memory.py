"""Handing memory freed by replaced weights back to the operating system.

Loading for inference replaces weights (unfused, unpacked or unquantized copies) by smaller ones. glibc keeps freed
blocks of up to 32 MB in its heap once a large block has been freed, and does not always reuse them for the next,
differently sized, allocations: BTLM-3B in int4 held 7.6 GB resident after `load_for_inference`, most of it free.
`load_for_inference` calls this once at the end; the streaming int4 load (`streaming_load.py`) after every block.
"""

from __future__ import annotations

import functools
import gc


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")  # runs ldconfig: once per process
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release_freed_memory(collect: bool = True) -> None:
    """Collect garbage (unless `collect` is False), then return the free pages of the heap to the OS (glibc's
    malloc_trim; elsewhere only the collection)."""
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


__all__ = ["release_freed_memory"]
