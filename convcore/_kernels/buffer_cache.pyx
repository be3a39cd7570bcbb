# cython: language_level=3
"""Memory for convcore's big results, kept for reuse when they are freed.

A training step allocates its outputs and gradients afresh every step,
each several MiB, and frees them by the end of the step. Memory that
large comes from the kernel (mmap, or glibc's heap top, which glibc
trims back), so every step faults its pages in again, and NumPy asks for
huge pages on every array from 4 MiB, which the kernel may find only by
compacting memory in the faulting thread. The first touch of a fresh
output then costs several times the kernel that writes it.

`Block(nbytes)` is memory that, when its last user (a
NumPy array made on it, or a view of that array) is gone, goes back to a
cache here instead of to the allocator. The next request of the same
size takes it, its pages already mapped. Kernels take their big scratch
from the same idle blocks (`take`/`give`, buffer_cache.pxd). The cache
keeps at most `limit()` bytes of idle blocks (set_limit; 0 turns it off),
the oldest given back first out. Every call runs with the GIL held
(allocation by convcore.\\_runtime.memory or a kernel before its nogil
section, release from the array's deallocation or the kernel's cleanup),
which serialises them.
"""
from libc.stdlib cimport free, malloc
from libc.string cimport memmove

cdef enum:
    MAX_IDLE = 1024           # idle blocks the cache tracks at most

# Below this, NumPy's own small-block cache and glibc's heap already reuse
# memory without faults: smaller requests bypass the cache.
MIN_BYTES = 1 << 20
cdef size_t _min_bytes = MIN_BYTES


cdef void* _idle_ptr[MAX_IDLE]
cdef size_t _idle_size[MAX_IDLE]
cdef Py_ssize_t _idle_count = 0
cdef size_t _idle_bytes = 0
cdef size_t _limit = 0


cdef void _drop_oldest() noexcept:
    global _idle_count, _idle_bytes
    free(_idle_ptr[0])
    _idle_bytes -= _idle_size[0]
    _idle_count -= 1
    memmove(&_idle_ptr[0], &_idle_ptr[1], _idle_count * sizeof(void*))
    memmove(&_idle_size[0], &_idle_size[1], _idle_count * sizeof(size_t))


cdef void* _take(size_t size) noexcept:
    """An idle block of exactly `size` bytes (the newest), or NULL."""
    global _idle_count, _idle_bytes
    cdef Py_ssize_t i
    cdef void* p
    for i in range(_idle_count - 1, -1, -1):
        if _idle_size[i] == size:
            p = _idle_ptr[i]
            _idle_count -= 1
            _idle_bytes -= size
            memmove(&_idle_ptr[i], &_idle_ptr[i + 1], (_idle_count - i) * sizeof(void*))
            memmove(&_idle_size[i], &_idle_size[i + 1], (_idle_count - i) * sizeof(size_t))
            return p
    return NULL


cdef void _give_back(void* p, size_t size) noexcept:
    global _idle_count, _idle_bytes
    if size > _limit or _limit == 0:
        free(p)
        return
    while _idle_count > 0 and (_idle_count == MAX_IDLE or _idle_bytes + size > _limit):
        _drop_oldest()
    _idle_ptr[_idle_count] = p
    _idle_size[_idle_count] = size
    _idle_count += 1
    _idle_bytes += size


cdef void* take(size_t nbytes) except NULL:
    """nbytes for a kernel's scratch: an idle block of that size, else new
    memory; give() it back. Kernels whose scratch passes glibc's largest
    heap block (32 MiB: mmap'ed and unmapped on free) would otherwise
    fault every page in again on every call."""
    cdef void* p = _take(nbytes) if nbytes >= _min_bytes else NULL
    if p == NULL:
        p = malloc(nbytes if nbytes > 0 else 1)
        if p == NULL:
            raise MemoryError(f"convcore: cannot allocate {nbytes} bytes")
    return p


cdef void give(void* p, size_t nbytes) noexcept:
    if nbytes < _min_bytes:
        free(p)
    elif p != NULL:
        _give_back(p, nbytes)


cdef class Block:
    """nbytes of writable memory exposed through the buffer protocol (one
    dimension of bytes); back to the cache when the last reference goes."""
    cdef void* ptr
    cdef size_t size
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __cinit__(self, size_t nbytes):
        self.ptr = take(nbytes)
        self.size = nbytes
        self.shape[0] = <Py_ssize_t> nbytes
        self.strides[0] = 1

    def __getbuffer__(self, Py_buffer* buf, int flags):
        buf.buf = self.ptr
        buf.obj = self
        buf.len = <Py_ssize_t> self.size
        buf.readonly = 0
        buf.itemsize = 1
        buf.format = "B"
        buf.ndim = 1
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer* buf):
        pass

    def __dealloc__(self):
        give(self.ptr, self.size)
        self.ptr = NULL


def limit():
    """Bytes of idle blocks the cache keeps at most."""
    return _limit


def set_limit(size_t nbytes):
    """Keep at most nbytes of idle blocks (0: none; idle blocks over the
    new limit are freed now). Returns the previous limit."""
    global _limit
    cdef size_t previous = _limit
    _limit = nbytes
    while _idle_count > 0 and _idle_bytes > _limit:
        _drop_oldest()
    return previous


def idle():
    """(blocks, bytes) idle in the cache now."""
    return _idle_count, _idle_bytes
