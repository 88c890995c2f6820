"""Hostile or odd input (issue 12): symlinks out of the folder, text without words, library warnings,
files that change while they are read, zip archives that try to escape or explode."""

from __future__ import annotations

import logging
import os
import random
import string
import warnings
import zipfile
from pathlib import Path

import pytest
from langchain_core.embeddings import Embeddings

from ingest.clean import looks_wordless, wordless_ratio
from ingest.loaders import load_document
from ingest.loaders.archives import list_members
from ingest.loaders.capture import captured_warnings
from ingest.pipeline import collect_files, ingest_paths
from tests.test_ingest_pipeline import EN_TEXT, ZH_TEXT, result, settings_for


def _folder_with_escape(tmp_path: Path) -> tuple[Path, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "passwd.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 5, encoding="utf-8")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "guide.txt").write_text(EN_TEXT, encoding="utf-8")
    (folder / "passwd.txt").symlink_to(secret)
    (folder / "inside.txt").symlink_to(folder / "guide.txt")
    (folder / "loop").symlink_to(folder)  # a loop: harmless
    (folder / "away").symlink_to(outside)  # a symlinked folder out of the root
    return folder, secret


def test_symlinks_out_of_the_folder_are_reported_not_followed(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder, _ = _folder_with_escape(tmp_path)
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    by_path = {f.path: f for f in report.files}
    assert by_path["docs/guide.txt"].status == "added"
    assert by_path["docs/passwd.txt"].status == "skipped"
    assert "symlink" in by_path["docs/passwd.txt"].reason
    assert not any("away" in p for p in by_path)  # the symlinked folder is not entered
    assert "docs/inside.txt" not in by_path  # a symlink inside the folder: the same file, read once


def test_follow_symlinks_reads_them_and_survives_loops(tmp_path: Path) -> None:
    folder, secret = _folder_with_escape(tmp_path)
    sources = {i.source for i in collect_files([folder], follow_symlinks=True) if not i.refused}
    assert "docs/passwd.txt" in sources
    assert len([s for s in sources if s.endswith("guide.txt")]) == 1  # the loop did not repeat it
    # A file named explicitly is read whatever it is.
    assert [i.refused for i in collect_files([folder / "passwd.txt"])] == [""]


def test_wordless_text_is_recognised() -> None:
    rng = random.Random(0)
    one_word = "z" * 5000
    letters = "".join(rng.choice(string.ascii_letters) for _ in range(5000))
    mixed_words = " ".join("".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(4, 9))) for _ in range(300))
    for junk in (one_word, letters, mixed_words):
        assert looks_wordless(junk), junk[:40]
    for prose in (EN_TEXT * 3, ZH_TEXT * 3, "NCCL and HTTP over TCP: the strengths of rhythm. " * 10):
        assert not looks_wordless(prose)
        assert wordless_ratio(prose) < 0.2


def test_a_file_of_one_huge_word_is_reported_not_indexed(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "junk.txt").write_text("q" * 200_000, encoding="utf-8")
    (folder / "ok.txt").write_text(EN_TEXT, encoding="utf-8")
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    junk = result(report, "in/junk.txt")
    assert junk.status == "failed" and "unreadable" in junk.reason and junk.chunks == 0
    assert result(report, "in/ok.txt").status == "added"


def test_library_warnings_go_to_the_report_not_the_terminal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "page.html"
    path.write_text("<p>Some real words in a page that is fine.</p>", encoding="utf-8")
    from ingest.loaders import base

    def noisy(p: Path, options: object) -> object:
        logging.getLogger("pypdf._reader").warning("Ignoring wrong pointing object 6 0 (offset 0)")
        warnings.warn("looks like a URL, not markup", UserWarning, stacklevel=1)
        return real(p, options)

    real = base._LOADERS[".html"]
    base._LOADERS[".html"] = noisy  # type: ignore[assignment]
    try:
        with caplog.at_level(logging.WARNING):
            doc = load_document(path)
    finally:
        base._LOADERS[".html"] = real
    assert "Ignoring wrong pointing object 6 0 (offset 0)" in doc.warnings
    assert any("looks like a URL" in w for w in doc.warnings)
    assert "wrong pointing" not in caplog.text
    assert "looks like a URL" not in capsys.readouterr().err


def test_capture_is_per_thread() -> None:
    import threading

    seen: list[str] = []
    with captured_warnings() as mine:
        thread = threading.Thread(target=lambda: logging.getLogger("pypdf").warning("other thread"))
        handler = logging.Handler()
        handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("pypdf").addHandler(handler)
        try:
            thread.start()
            thread.join()
        finally:
            logging.getLogger("pypdf").removeHandler(handler)
    assert mine == [] and seen == ["other thread"]


def test_a_file_that_changes_while_read_is_reported(
    tmp_path: Path, fake_embeddings: Embeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    target = folder / "moving.txt"
    target.write_text(EN_TEXT, encoding="utf-8")
    import ingest.pipeline as pipeline

    real = pipeline.load_document

    def load_then_write(path: Path, options: object) -> object:
        doc = real(path, options)  # type: ignore[arg-type]
        with path.open("a", encoding="utf-8") as fh:  # a writer appends while we read
            fh.write("\nA late line.")
        return doc

    monkeypatch.setattr(pipeline, "load_document", load_then_write)
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    item = result(report, "in/moving.txt")
    assert item.status == "failed" and "changed while" in item.reason
    monkeypatch.setattr(pipeline, "load_document", real)
    again = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    assert result(again, "in/moving.txt").status == "added"  # whole, next time


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_zip_members_are_documents_and_escapes_are_refused(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _zip(folder / "bundle.zip", {
        "guide/en.txt": EN_TEXT.encode(),
        "zh.md": ZH_TEXT.encode(),
        "../../evil.txt": b"escape attempt " * 20,
        "/etc/passwd.txt": b"absolute " * 20,
        "bomb.txt": b"0" * (30 << 20),
        "inner.zip": b"PK",
        "image.bmp": b"BM",
    })
    report = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    by_path = {f.path: f for f in report.files}
    assert by_path["in/bundle.zip!guide/en.txt"].status == "added"
    assert by_path["in/bundle.zip!zh.md"].status == "added"
    assert "unsafe member path" in by_path["in/bundle.zip!../../evil.txt"].reason
    assert "unsafe member path" in by_path["in/bundle.zip!/etc/passwd.txt"].reason
    assert "zip bomb" in by_path["in/bundle.zip!bomb.txt"].reason
    assert "archive inside an archive" in by_path["in/bundle.zip!inner.zip"].reason
    assert by_path["in/bundle.zip!image.bmp"].status == "skipped"
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()
    again = ingest_paths(settings_for(tmp_path / "data"), [folder], embeddings=fake_embeddings)
    assert {f.status for f in again.files if f.path.endswith(("en.txt", "zh.md"))} == {"unchanged"}


def test_a_corrupt_zip_fails_by_name(tmp_path: Path, fake_embeddings: Embeddings) -> None:
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(Exception) as info:
        list_members(bad)
    assert "zip" in str(info.value)
    report = ingest_paths(settings_for(tmp_path / "data"), [bad], embeddings=fake_embeddings)
    assert report.files[0].status == "failed" and report.files[0].path == "broken.zip"


def test_symlink_loop_only_in_folder_is_harmless(tmp_path: Path) -> None:
    folder = tmp_path / "loop"
    folder.mkdir()
    (folder / "a.txt").write_text(EN_TEXT, encoding="utf-8")
    os.symlink(folder, folder / "self")
    for follow in (False, True):
        assert [i.source for i in collect_files([folder], follow_symlinks=follow)] == ["loop/a.txt"]


def test_cli_follow_symlinks_flag(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rag_app.cli import cli

    folder, _ = _folder_with_escape(tmp_path)
    base = ["--profile", "fake", "--data-dir", str(tmp_path / "data"), "ingest", "-q", str(folder)]
    refused = CliRunner().invoke(cli, base)
    assert refused.exit_code == 0 and "skipped: docs/passwd.txt" in refused.output and "symlink" in refused.output
    assert "1 file(s) ok, 1 skipped" in refused.output
    followed = CliRunner().invoke(cli, [*base, "--follow-symlinks"])
    assert followed.exit_code == 0 and "2 file(s) ok, 0 skipped" in followed.output
