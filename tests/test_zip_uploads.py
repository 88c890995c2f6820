"""Zip uploads and ``rag ingest`` apply one set of archive rules (issue 12): a hostile zip uploaded through the
app is refused whole, with the words ``rag ingest`` reports for the same member, and nothing is half written."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from rag_app import uploads
from rag_app.cli import cli
from rag_app.service import RagService
from rag_app.uploads import UploadError

GOOD = b"The assistant answers questions about your own documents, offline. " * 3


def _zip(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buf.getvalue()


HOSTILE = {
    "traversal": ("../evil.txt", _zip({"docs/good.txt": GOOD, "../evil.txt": b"escape attempt " * 20}),
                  "unsafe member path (absolute or with '..')"),
    "absolute": ("/etc/passwd.txt", _zip({"docs/good.txt": GOOD, "/etc/passwd.txt": b"absolute " * 20}),
                 "unsafe member path (absolute or with '..')"),
    "ratio bomb": ("bomb.txt", _zip({"docs/good.txt": GOOD, "bomb.txt": b"0" * (30 << 20)}),
                   "compression ratio of a zip bomb"),
    "nested zip": ("inner.zip", _zip({"docs/good.txt": GOOD, "inner.zip": _zip({"deeper.txt": GOOD})}),
                   "archive inside an archive (not opened)"),
    "symlink": ("docs/link.txt", _zip({"docs/good.txt": GOOD}, symlink="docs/link.txt"),
                "a symbolic link (not followed)"),
}


@pytest.fixture
def service(fake_settings: object, fake_embeddings: object) -> RagService:
    return RagService(fake_settings, embeddings=fake_embeddings)  # type: ignore[arg-type]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_zip_refused_alike_by_upload_and_rag_ingest(case: str, tmp_path: Path, service: RagService) -> None:
    member, data, reason = HOSTILE[case]
    expected = f"bundle.zip!{member}: {reason}"
    # rag ingest reads the zip in place: the member is reported with that reason, the good one is read.
    (tmp_path / "bundle.zip").write_bytes(data)
    cli_result = CliRunner().invoke(
        cli, ["--profile", "fake", "--data-dir", str(tmp_path / "cli-data"), "ingest", str(tmp_path / "bundle.zip")])
    assert expected in cli_result.output, cli_result.output
    # The upload is refused whole, in the same words; nothing is written, nothing is indexed.
    with pytest.raises(UploadError) as info:
        service.ingest_uploads([("bundle.zip", data)])
    assert str(info.value) == expected
    assert _files(service.uploads_folder()) == []
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    assert not service.knowledge_bases() or service.documents() == []


def test_a_refused_reupload_leaves_the_earlier_one_and_the_batch_goes_on(service: RagService) -> None:
    """Issue 18: a zip refused whole is reported on its own line; the rest of its batch is kept and ingested."""
    service.ingest_uploads([("bundle.zip", _zip({"docs/good.txt": GOOD}))])
    folder = service.uploads_folder()
    before = {p: p.read_bytes() for p in _files(folder)}
    assert [p.relative_to(folder).as_posix() for p in before] == ["bundle/docs/good.txt"]
    _, hostile, _ = HOSTILE["ratio bomb"]
    notes = b"Notes travel beside a refused zip and are kept. " * 3
    report = service.ingest_uploads([("notes.txt", notes), ("bundle.zip", hostile)])
    by_path = {f.path: f for f in report.files}
    assert by_path["notes.txt"].status == "added"
    assert by_path["bundle.zip"].status == "failed" and "zip bomb" in by_path["bundle.zip"].reason
    after = {p: p.read_bytes() for p in _files(folder)}
    assert after == before | {folder / "notes.txt": notes}  # the old bundle as it was
    assert not [p for p in folder.iterdir() if p.name.startswith(".staging")]


def test_a_failure_while_unpacking_writes_nothing(service: RagService, monkeypatch: pytest.MonkeyPatch) -> None:
    real = uploads.read_members

    def fail_after_one(path: Path, names: list[str], **limits: object) -> Iterator[tuple[str, bytes]]:
        for i, item in enumerate(real(path, names, **limits)):  # type: ignore[arg-type]
            if i == 1:
                raise OSError(28, "No space left on device")
            yield item

    monkeypatch.setattr(uploads, "read_members", fail_after_one)
    with pytest.raises(UploadError, match="bundle.zip: cannot unpack the zip"):
        service.ingest_uploads([("bundle.zip", _zip({"a.txt": GOOD, "b.txt": GOOD, "c.txt": GOOD}))])
    assert _files(service.uploads_folder()) == []


def test_harmless_members_do_not_refuse_an_upload(service: RagService) -> None:
    """Hidden files (macOS's __MACOSX, .DS_Store) are left out, as a folder walk skips them; an unsupported
    type is reported as `rag ingest` reports it."""
    data = _zip({"docs/good.txt": GOOD, "__MACOSX/docs/._good.txt": b"\x00\x05", ".DS_Store": b"\x00",
                 "image.bmp": b"BM"})
    report = service.ingest_uploads([("bundle.zip", data)])
    by_path = {f.path: f for f in report.files}
    assert by_path["bundle/docs/good.txt"].status == "added"
    assert by_path["bundle/image.bmp"].status == "skipped"
    assert "unsupported file type '.bmp'" in by_path["bundle/image.bmp"].reason
    assert [p.relative_to(service.uploads_folder()).as_posix() for p in _files(service.uploads_folder())] == [
        "bundle/docs/good.txt"]


def test_a_corrupt_zip_upload_names_the_zip(service: RagService) -> None:
    with pytest.raises(UploadError, match=r"^bad\.zip: not a readable zip archive"):
        service.ingest_uploads([("bad.zip", b"PK\x03\x04 not a zip")])
    assert _files(service.uploads_folder()) == []
