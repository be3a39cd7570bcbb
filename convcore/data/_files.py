"""Bounded reading of raw or gzip-compressed data files.

Readers state how many bytes they expect before reading; a file's header
may claim any size, so nothing is allocated from a declared size: bytes are
read in chunks and reading stops one chunk past the limit. A hostile header
("10^12 images") therefore costs at most the real file, never more."""
import gzip
import os
import zlib

_CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_bytes(path, limit=None):
    """The (decompressed, when the file starts with the gzip magic) content
    of `path`, at most `limit` + 1 bytes, so a caller can tell "too long"
    from "exactly right". Corrupt gzip streams raise ValueError naming the
    file."""
    path = os.fspath(path)
    opener = gzip.open if is_gzip(path) else open
    parts, total = [], 0
    try:
        with opener(path, "rb") as f:
            while limit is None or total <= limit:
                want = _CHUNK if limit is None else min(_CHUNK, limit + 1 - total)
                chunk = f.read(want)
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise ValueError(f"{path}: not a readable gzip file ({e})") from e
    return b"".join(parts)


def find_file(directory, candidates, what):
    """The first existing `directory/candidate` (each also tried with .gz);
    FileNotFoundError listing every path tried when none exists."""
    directory = os.fspath(directory)
    tried = []
    for name in candidates:
        for suffix in ("", ".gz"):
            p = os.path.join(directory, name + suffix)
            tried.append(p)
            if os.path.isfile(p):
                return p
    raise FileNotFoundError(
        f"{what}: none of these files exists: " + ", ".join(tried))
