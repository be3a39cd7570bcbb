# The buffer cache's C interface, for kernels' scratch (buffer_cache.pyx).
# Both with the GIL held, as every use of the cache.

# nbytes of memory: an idle block of exactly that size, else malloc's
# (below MIN_BYTES always malloc's).
cdef void* take(size_t nbytes) except NULL
# Back to the idle blocks (or freed, past the cache's limit); NULL ignored.
cdef void give(void* p, size_t nbytes) noexcept
