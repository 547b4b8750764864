"""Streaming reader for webdataset tar shards (local files, `pipe:` commands, fsspec URLs).

A small hand-written ustar parser instead of `tarfile`: it is faster per member, reads strictly
sequentially (works on pipes and object-store streams) and tells a truncated archive apart from a clean
end, so the caller can keep every complete sample and report the rest.
"""

import os
import subprocess

BLOCK = 512


class TruncatedTar(IOError):
    """The stream ended inside a member or before the end-of-archive marker."""


class ShardUnreadable(IOError):
    """The shard could not be opened or its producing command failed."""


class _PipeStream:
    """stdout of a shell command; closing checks its exit status."""

    def __init__(self, command: str):
        self.command = command
        self.proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, bufsize=1 << 20)

    def read(self, n: int) -> bytes:
        return self.proc.stdout.read(n)

    def close(self) -> None:
        self.proc.stdout.close()
        code = self.proc.wait()
        if code != 0:
            raise ShardUnreadable(f"command exited with status {code}: {self.command}")


def open_shard(url: str):
    """A readable binary stream for `url`: `pipe:cmd`, `-` is not supported, `scheme://...` via fsspec."""
    try:
        if url.startswith("pipe:"):
            return _PipeStream(url[len("pipe:") :])
        if "://" in url and not url.startswith("file://"):
            import fsspec  # noqa: PLC0415  (only remote users pay the import)

            return fsspec.open(url, "rb").open()
        path = url[len("file://") :] if url.startswith("file://") else url
        return open(path, "rb", buffering=1 << 20)  # noqa: SIM115
    except Exception as e:  # any open failure is the same fault for the caller
        raise ShardUnreadable(f"{type(e).__name__}: {e}") from e


def _octal(field: bytes) -> int:
    if field and field[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        return int.from_bytes(field[1:], "big")
    field = field.strip(b"\0 ")
    return int(field, 8) if field else 0


def _checksum_ok(header: bytes) -> bool:
    try:
        stored = _octal(header[148:156])
    except ValueError:
        return False
    # The checksum field itself counts as eight spaces; old tars summed signed bytes.
    unsigned = sum(header[:148]) + 8 * 32 + sum(header[156:])
    signed = unsigned - 256 * sum(1 for b in header[:148] + header[156:] if b > 127)
    return stored in (unsigned, signed)


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) == n or not data:
        return data
    chunks = [data]
    got = len(data)
    while got < n:
        more = stream.read(n - got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def iter_tar_members(stream):
    """Yield (name, data) of the regular files in a tar stream; raise TruncatedTar on a cut archive."""
    long_name = None
    pax_name = None
    first = True
    while True:
        header = _read_exact(stream, BLOCK)
        if not header:
            if first:
                raise ShardUnreadable("empty stream (no data)")
            raise TruncatedTar("stream ended without the end-of-archive marker")
        if len(header) < BLOCK:
            if first:
                raise ShardUnreadable(f"not a tar archive ({len(header)} bytes)")
            raise TruncatedTar("stream ended inside a header")
        if header == b"\0" * BLOCK:
            return
        if not _checksum_ok(header):
            if first:
                raise ShardUnreadable("not a tar archive (bad header checksum)")
            raise TruncatedTar("corrupt tar header (bad checksum)")
        first = False
        size = _octal(header[124:136])
        kind = header[156:157]
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        payload = _read_exact(stream, padded)
        if len(payload) < padded:
            member = header[:100].rstrip(b"\0").decode(errors="replace")
            raise TruncatedTar(f"stream ended inside member {member}")
        data = payload[:size]
        if kind == b"L":  # GNU long name for the next member
            long_name = data.rstrip(b"\0").decode("utf-8", "replace")
            continue
        if kind == b"x":  # pax extended header: only the path matters here
            for record in data.split(b"\n"):
                _, _, kv = record.partition(b" ")
                if kv.startswith(b"path="):
                    pax_name = kv[5:].decode("utf-8", "replace")
            continue
        if kind not in (b"0", b"\0", b"7"):  # directories, links, global headers carry no sample data
            long_name = pax_name = None
            continue
        name = pax_name or long_name
        if name is None:
            name = header[:100].rstrip(b"\0").decode("utf-8", "replace")
            prefix = header[345:500].rstrip(b"\0")
            if header[257:262] == b"ustar" and prefix:
                name = prefix.decode("utf-8", "replace") + "/" + name
        long_name = pax_name = None
        yield name, data


def split_key(name: str) -> tuple[str, str]:
    """webdataset convention: the key is the path up to the first dot of the file name."""
    directory, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), ext.lower() if dot else ""


def iter_tar_samples(stream):
    """Group consecutive members sharing a key into dicts {"__key__": key, ext: bytes}."""
    current = None
    try:
        for name, data in iter_tar_members(stream):
            key, ext = split_key(name)
            if key.startswith("__") or not ext:  # e.g. __index__ or stray files without extension
                continue
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            current[ext] = data
    except TruncatedTar:
        # The members read in full before the cut still form a sample (possibly missing parts).
        if current is not None:
            yield current
        raise
    if current is not None:
        yield current
