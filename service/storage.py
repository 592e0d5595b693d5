"""The API's side of storage (core.storage): uploads streamed in and stored, files and artifacts out.

An upload is parsed from the raw request stream rather than through Starlette's form parser,
which would first spool the whole file to the system temp folder with no size limit; here every
chunk is counted, hashed and written to `data_dir/uploads/` as it arrives, and the limit stops the
request the moment it is crossed. The file is validated there (every line is read), then stored: on
the local engine `uploads/` sits beside `files/` so that is one rename; on S3 it is uploaded under
the file's new id, a key nothing reads until the File row commits.
"""

import errno
import hashlib
import logging
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from core.models import Job
from core.settings import Settings
from core.storage import Storage
from core.storage.keys import artifact_prefix, file_key, job_artifacts, job_checkpoints, join, resume_prefix
from service.errors import ApiError, InsufficientStorage, TooLarge

if TYPE_CHECKING:  # a typing-only name in python-multipart
    from python_multipart.multipart import MultipartCallbacks

logger = logging.getLogger(__name__)

# What a full disk (or an exhausted quota) raises on write: the server's condition, answered 507.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# Multipart framing (boundaries, part headers, the purpose field) on top of the file itself; a
# Content-Length beyond limit + this cannot hold a file within the limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 1024


@dataclass
class ReceivedUpload:
    """A file part written to a temp file, with the small form fields that came with it."""

    path: Path
    filename: str
    bytes: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)


def uploads_dir(settings: Settings) -> Path:
    return settings.data_dir / "uploads"


def publish_upload(upload: ReceivedUpload, storage: Storage, file_id: str) -> str:
    """Store a validated upload as `files/<file_id>`; returns its key."""
    key = file_key(file_id)
    storage.put_file(upload.path, key)
    return key


def remove_upload(upload: ReceivedUpload) -> None:
    upload.path.unlink(missing_ok=True)


def artifact_key(job: Job, name: str) -> str:
    """The stored bytes of artifact `name`; callers look `name` up in the Artifact table first. They
    live in the folder of the attempt that published them (core.storage.keys.artifact_prefix).

    keys.join is a second guard: even a bad row cannot point outside the job's folder.
    """
    return join(artifact_prefix(job.id, job.attempt), name)


def remove_job_objects(storage: Storage, job_id: str) -> None:
    """Everything a job stored: the artifact of every attempt, its checkpoints, its resume points."""
    for prefix in (job_artifacts(job_id), job_checkpoints(job_id), resume_prefix(job_id)):
        storage.remove_folder(prefix)


def stored_file_response(
    storage: Storage, key: str, *, filename: str, media_type: str, headers: dict[str, str] | None = None
) -> Response:
    """A download of one stored object, streamed: from the local file as Starlette serves files, or
    chunk by chunk from the object store. The caller checked that it is there (Storage.stat)."""
    path = storage.local_path(key)
    if path is not None:
        return FileResponse(path, media_type=media_type, filename=filename, headers=headers)
    info = storage.stat(key)
    if info is None:
        raise FileNotFoundError(key)
    response = StreamingResponse(storage.read_chunks(key), media_type=media_type, headers=headers)
    response.headers["Content-Length"] = str(info.bytes)
    # As FileResponse words it: a plain name quoted, any other encoded (RFC 6266).
    quoted = quote(filename)
    plain = quoted == filename
    disposition = f'filename="{filename}"' if plain else f"filename*=utf-8''{quoted}"
    response.headers["Content-Disposition"] = f"attachment; {disposition}"
    return response


async def receive_upload(
    request: Request, *, file_field: str, text_fields: Sequence[str], settings: Settings
) -> ReceivedUpload:
    """Stream a multipart body's `file_field` to a temp file, enforcing `max_upload_bytes`.

    Raises ApiError for a body that is not multipart, an unexpected or missing field, or one cut off
    before its closing boundary (400), TooLarge (413) over the limit, InsufficientStorage (507) on a
    full disk, and ClientDisconnect when the client leaves; the temp file never outlives a failure.
    """
    boundary = _multipart_boundary(request)
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_OVERHEAD_BYTES:
        raise _too_large(limit)
    reader = _MultipartReader(boundary, file_field, text_fields, limit)
    name = ""
    try:
        uploads_dir(settings).mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=uploads_dir(settings), prefix="upload-")
        with os.fdopen(handle, "wb") as out:
            async for chunk in request.stream():
                for data in reader.feed(chunk):
                    await run_in_threadpool(out.write, data)
            reader.finish()
    except OSError as error:
        _remove(name)
        if error.errno in NO_SPACE:
            logger.warning("upload refused: the data folder is full (%d bytes received)", reader.size)
            raise InsufficientStorage(
                "the server has no room left to store this file; nothing was stored, retry later",
                param="file",
                code="insufficient_storage",
            ) from None
        raise
    except ClientDisconnect:
        _remove(name)
        logger.info("upload abandoned: the client disconnected after %d bytes", reader.size)
        raise
    except BaseException:
        _remove(name)
        raise
    return ReceivedUpload(Path(name), reader.filename, reader.size, reader.sha256.hexdigest(), reader.fields)


def _remove(name: str) -> None:
    if name:
        Path(name).unlink(missing_ok=True)


def _multipart_boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(
            "expected a multipart/form-data body with the fields 'file' and 'purpose'",
            status_code=415,
            code="unsupported_media_type",
        )
    return boundary


def clean_filename(raw: str) -> str:
    """The last path component, printable characters only: a client's folders are not our business,
    and NUL or a newline would break the database or the Content-Disposition header."""
    name = "".join(char for char in raw.replace("\\", "/").rsplit("/", 1)[-1] if char.isprintable())
    return name.strip()[:255] or "upload.jsonl"


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"file is larger than the upload limit of {limit} bytes", param="file", code="file_too_large"
    )


class _MultipartReader:
    """Feeds python-multipart's push parser and sorts what it finds into the file and the fields."""

    def __init__(self, boundary: bytes, file_field: str, text_fields: Sequence[str], limit: int) -> None:
        self.file_field = file_field
        self.text_fields = tuple(text_fields)
        self.limit = limit
        self.fields: dict[str, str] = {}
        self.filename = ""
        self.size = 0
        self.sha256 = hashlib.sha256()
        self._seen_file = False
        self._ended = False  # the closing boundary was seen
        self._events: list[tuple[str, bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._part: str | None = None  # name of the part being read
        self._field_value = bytearray()
        self._parser = MultipartParser(boundary, self._callbacks())

    def _callbacks(self) -> "MultipartCallbacks":
        def record(kind: str) -> object:
            return lambda data=b"", start=0, end=0: self._events.append((kind, bytes(data[start:end])))

        kinds = ("part_begin", "part_data", "part_end", "header_field", "header_value", "header_end")
        callbacks: dict[str, object] = {f"on_{kind}": record(kind) for kind in kinds}
        callbacks["on_headers_finished"] = record("headers_finished")
        callbacks["on_end"] = record("end")
        return cast("MultipartCallbacks", callbacks)

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """Parse one chunk; yield the bytes of the file part it carried, in order."""
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:
            raise ApiError(f"malformed multipart body: {error}", code="invalid_multipart") from None
        events, self._events = self._events, []
        for kind, data in events:
            file_data = self._handle(kind, data)
            if file_data:
                yield file_data

    def finish(self) -> None:
        self._parser.finalize()  # which checks nothing: the closing boundary is checked here
        if not self._ended:
            # A body cut off (a dropped connection, a proxy's timeout) would otherwise store the lines
            # that arrived as if they were the whole file.
            raise ApiError(
                "the multipart body ended before its closing boundary: the upload is incomplete "
                "and nothing was stored",
                code="incomplete_upload",
            )
        if not self._seen_file:
            raise ApiError(
                f"{self.file_field}: field required (a multipart file part)",
                param=self.file_field,
                code="missing",
            )

    def _handle(self, kind: str, data: bytes) -> bytes | None:
        if kind == "part_begin":
            self._headers, self._part, self._field_value = {}, None, bytearray()
        elif kind == "header_field":
            self._header_field += data
        elif kind == "header_value":
            self._header_value += data
        elif kind == "header_end":
            self._headers[self._header_field.lower()] = self._header_value
            self._header_field, self._header_value = b"", b""
        elif kind == "headers_finished":
            self._start_part()
        elif kind == "part_data":
            return self._part_data(data)
        elif kind == "part_end" and self._part in self.text_fields:
            self.fields[self._part] = self._field_value.decode("utf-8", errors="replace")
        elif kind == "end":
            self._ended = True
        return None

    def _start_part(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        expected = ", ".join(repr(n) for n in (self.file_field, *self.text_fields))
        if name == self.file_field:
            if self._seen_file:
                raise ApiError(
                    f"send one {self.file_field!r} part, not several", param=name, code="duplicate_field"
                )
            self._seen_file = True
            raw_filename = options.get(b"filename", b"").decode("utf-8", errors="replace")
            self.filename = clean_filename(raw_filename)
        elif name not in self.text_fields:
            raise ApiError(
                f"unexpected form field {name!r}; expected {expected}", param=name, code="unknown_field"
            )
        self._part = name

    def _part_data(self, data: bytes) -> bytes | None:
        if self._part == self.file_field:
            self.size += len(data)
            if self.size > self.limit:
                raise _too_large(self.limit)
            self.sha256.update(data)
            return data
        self._field_value += data
        if len(self._field_value) > MAX_FIELD_BYTES:
            raise ApiError(f"{self._part}: value too long", param=self._part, code="value_too_long")
        return None


def stream_tar_gz(storage: Storage, members: Sequence[tuple[str, str]], *, root: str) -> Iterator[bytes]:
    """A .tar.gz of `(name, key)` members under `root/`, produced chunk by chunk.

    Written by hand from tarfile's header blocks so that nothing larger than one chunk is ever held
    in memory: tarfile's own writer only hands output back after a whole member is written.
    """
    gzip = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: deflate in a gzip container
    for name, key in members:
        info = tarfile.TarInfo(f"{root}/{name}")
        stored = storage.stat(key)
        if stored is None:
            raise FileNotFoundError(f"{key} vanished while being archived")
        info.size, info.mtime, info.mode = stored.bytes, int(stored.modified), 0o644
        yield gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT))
        yield from _compressed_content(gzip, storage.read_chunks(key), key, info.size)
        yield gzip.compress(tarfile.NUL * (-info.size % tarfile.BLOCKSIZE))
    yield gzip.compress(tarfile.NUL * (2 * tarfile.BLOCKSIZE))  # end of archive: two zero blocks
    yield gzip.flush()


def _compressed_content(
    gzip: "zlib._Compress", chunks: Iterator[bytes], key: str, size: int
) -> Iterator[bytes]:
    remaining = size
    for chunk in chunks:
        if len(chunk) > remaining:
            raise OSError(f"{key} grew while being archived")
        remaining -= len(chunk)
        yield gzip.compress(chunk)
    if remaining:
        # The header already promised `size` bytes; a shorter member would corrupt the archive.
        raise OSError(f"{key} shrank while being archived")
