"""A multipart upload streamed to files as it arrives, never held in memory (issue 18).

Starlette's form parser keeps each file in a temporary file of the system's and the upload route then read
them into memory, where a queued ``?wait=false`` job kept them until its turn. Here each file part of the
field ``files`` goes straight into ``<spool folder>/<index>`` (under the data directory, one folder per job),
chunk by chunk, with the parser run off the event loop; the body's size is bounded as it streams by the
server's ``BodyLimit`` (``server.max_upload_mb``), which wraps the request's ``receive``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FILES_FIELD = "files"


class FormError(Exception):
    """A multipart body that cannot be read (no boundary, too many files or fields, a malformed part)."""


@dataclass
class Received:
    """What a multipart upload carried: its files (name as sent, spooled file) and its text fields."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    bytes: int = 0


class _Parts:
    """python-multipart's callbacks: file parts of ``files`` written to the folder, small fields kept."""

    def __init__(self, folder: Path, max_files: int, max_fields: int, max_field_bytes: int) -> None:
        self.folder, self.max_files, self.max_fields = folder, max_files, max_fields
        self.max_field_bytes = max_field_bytes
        self.received = Received()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._filename: str | None = None
        self._out: IO[bytes] | None = None
        self._data = bytearray()
        self._fields = 0

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data, "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._filename, self._data = b"", "", None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in options:
            self._filename = options[b"filename"].decode("utf-8", "replace")
            if self._name == FILES_FIELD:
                if len(self.received.files) >= self.max_files:
                    raise FormError(f"too many files: at most {self.max_files} in one upload")
                path = self.folder / str(len(self.received.files))
                self._out = path.open("wb")
                self.received.files.append((self._filename, path))
        else:
            self._fields += 1
            if self._fields > self.max_fields:
                raise FormError(f"too many form fields: at most {self.max_fields}")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self._out.write(data[start:end])
        elif self._filename is None:
            self._data += data[start:end]
            if len(self._data) > self.max_field_bytes:
                raise FormError(f"the form field '{self._name}' is larger than {self.max_field_bytes >> 10} KB")

    def on_part_end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self._filename is None:
            self.received.fields[self._name] = self._data.decode("utf-8", "replace")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_multipart(
    request: Any, folder: Path, *, max_files: int = 1000, max_fields: int = 100, max_field_bytes: int = 1 << 20
) -> Received:
    """Stream ``request``'s multipart body into ``folder`` (which exists): a file per part of the field
    ``files``, named by its index. Raises :class:`FormError` for a body that cannot be read, and whatever the
    stream raises (the client gone: ``ClientDisconnect``; the body too large); the caller removes the folder."""
    from python_multipart import MultipartParser
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormError("the multipart body has no boundary")
    parts = _Parts(folder, max_files, max_fields, max_field_bytes)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in request.stream():
            if chunk:
                parts.received.bytes += len(chunk)
                await asyncio.to_thread(parser.write, chunk)  # parsing and writing: off the event loop
        parser.finalize()
    except FormParserError as exc:
        raise FormError(f"malformed multipart body ({exc})") from exc
    finally:
        parts.close()
    return parts.received
