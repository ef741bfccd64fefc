"""The code of a pipeline's deployed version, for reading on its page: the files of the
bundle its runs take (pipelines_app.bundles), read from the database so any web node shows
them, highlighted on the server by Pygments.

A bundle holds only the folder's regular files and the links that stay inside it, so
nothing here reads the disk; a file is shown from the archive, never followed anywhere.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from dataclasses import dataclass
from functools import lru_cache

from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.util import ClassNotFound

from pipelines_app.models import CodeBundle

LARGEST_SHOWN = 512 * 1024  # a bigger file is listed, not shown
MOST_FILES = 500
KEPT_UP_TO = 8 * 1024 * 1024  # archives this small stay in memory (a few of them)
FORMATTER = HtmlFormatter(
    cssclass="highlight", linenos="table", lineanchors="line", anchorlinenos=True, wrapcode=True
)


@dataclass(frozen=True)
class CodeFile:
    path: str
    size: int
    link_to: str = ""  # a link inside the folder: where it points
    offset: int = 0  # where its bytes start in the archive


@dataclass
class Shown:
    file: CodeFile
    html: SafeString | None  # None: not shown, `why` says why
    why: str = ""


@dataclass(frozen=True)
class Version:
    """A bundle opened: its archive and its files by path, sorted."""

    archive: bytes
    files: dict[str, CodeFile]

    @property
    def listing(self) -> list[CodeFile]:
        """The files, sorted by path (at most MOST_FILES)."""
        return list(self.files.values())[:MOST_FILES]

    def show(self, path: str) -> Shown | None:
        """One file highlighted, or why it is not; None when there is no such file."""
        file = self.files.get(path)
        if file is None:
            return None
        if file.link_to:
            return Shown(file, None, f"a link to {file.link_to}")
        if file.size > LARGEST_SHOWN:
            return Shown(file, None, f"too large to show here ({file.size:,} bytes)")
        data = self.archive[file.offset : file.offset + file.size]
        if b"\0" in data[:8192]:
            return Shown(file, None, f"not text ({file.size:,} bytes)")
        text = data.decode("utf-8", errors="replace")
        try:
            lexer = get_lexer_for_filename(path, text)
        except ClassNotFound:
            lexer = TextLexer()
        return Shown(file, mark_safe(highlight(text, lexer, FORMATTER)))  # noqa: S308 (escaped by Pygments)


def version_of(bundle: CodeBundle) -> Version:
    """The bundle opened, once per page. A bundle never changes (it is named by its
    content), so a few small ones stay in memory for the next pages (a big one, up to
    BUNDLE_MAX_MB, is read again each time rather than held)."""
    if bundle.size <= KEPT_UP_TO:
        return _kept(bundle.sha256, bundle.pk)
    return _read(bundle.pk)


@lru_cache(maxsize=8)
def _kept(sha256: str, bundle_id: int) -> Version:
    # The bytes are only sliced, never read through a shared file object: threads share them.
    return _read(bundle_id)


def _read(bundle_id: int) -> Version:
    data = CodeBundle.objects.filter(pk=bundle_id).values_list("data", flat=True).get()
    archive = zlib.decompress(bytes(data))
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        members = sorted(tar.getmembers(), key=lambda member: member.name)
    files = {
        member.name: CodeFile(
            member.name,
            member.size,
            member.linkname if member.issym() else "",
            member.offset_data,
        )
        for member in members
        if member.isfile() or member.issym()
    }
    return Version(archive, files)
