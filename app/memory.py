"""The C allocator's settings, so that memory taken by a burst of large images goes back to the system after it.

glibc's malloc serves large blocks (decoded images, float copies) with mmap and returns them on free, but its mmap
threshold rises to the size of the largest block freed (up to 32 MB): after one large image, later ones come from
the heap arenas, which keep their memory. A fixed threshold keeps large blocks on mmap; malloc_trim hands back what
the arenas still hold once the burst is over. Elsewhere than glibc (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # mallopt's parameter numbers, from glibc's malloc.h
MMAP_THRESHOLD = 256 * 1024  # blocks this large or larger are mmapped, and unmapped when freed
TRIM_INTERVAL_S = 1.0  # malloc_trim walks every arena: at most once a second

_libc: ctypes.CDLL | None = None
_last_trim = 0.0


def _glibc() -> ctypes.CDLL | None:
    global _libc
    if _libc is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            libc.gnu_get_libc_version  # noqa: B018 - raises AttributeError outside glibc
        except (OSError, AttributeError):
            return None
        _libc = libc
    return _libc


def configure_allocator() -> None:
    """Large blocks on mmap whatever was freed before (see above); called once at start-up."""
    libc = _glibc()
    if libc is not None and not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.warning("mallopt(M_MMAP_THRESHOLD) failed: memory after bursts of large images may stay taken")


def release_free_memory() -> None:
    """Give the system back the free memory the allocator holds; at most once every TRIM_INTERVAL_S."""
    global _last_trim
    libc = _glibc()
    now = time.monotonic()
    if libc is not None and now - _last_trim >= TRIM_INTERVAL_S:
        _last_trim = now
        libc.malloc_trim(0)
