"""A job's uploads: files placed under its /work, checked where a spec is made."""

from __future__ import annotations

import base64
import binascii
import posixpath
from dataclasses import dataclass
from typing import Any

from joblet.fields import brief, checked, integer, no_nul, only_known, required, text, type_name

UPLOAD_FIELDS = ("path", "mode", "content")


@dataclass(frozen=True, slots=True)
class Upload:
    """One file to place under /work; `content` is base64."""

    path: str
    mode: int = 0o644
    content: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", checked("path", _upload_path, self.path))
        object.__setattr__(self, "mode", checked("mode", integer, self.mode, 0, 0o7777))
        object.__setattr__(self, "content", checked("content", _base64, self.content))

    @classmethod
    def from_dict(cls, data: Any) -> Upload:
        return data if isinstance(data, Upload) else cls(**required(only_known(data, UPLOAD_FIELDS), "path"))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode, "content": self.content}

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.content)

    @property
    def size(self) -> int:
        """The decoded bytes, without decoding: each '=' of padding stands for one byte fewer
        (counting them as bytes put a file of exactly the limit one or two bytes over it)."""
        return len(self.content) * 3 // 4 - self.content.count("=", -2)


MAX_DEPTH = 128  # folders an upload path may go down; deeper failed the job inside the worker
NAME_MAX = 255  # bytes of one file or folder name (the kernel's)


def _upload_path(value: Any) -> str:
    path = no_nul(text(value, 1, 4096), "upload path")
    norm = posixpath.normpath(path)
    if path.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        raise ValueError(f"upload path {brief(path)} escapes /work")
    return norm


def path_problem(path: str) -> str | None:
    """Why the worker could not write an upload's (checked) path, for a spec submitted now
    (models.check_fresh): a 1,500-deep one failed its job with `internal error:
    RecursionError`, a name past 255 bytes with ENAMETOOLONG."""
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        return f"upload path {brief(path)} is {len(parts)} names deep (at most {MAX_DEPTH})"
    if any(len(part.encode(errors="surrogatepass")) > NAME_MAX for part in parts):
        return f"upload path {brief(path)} has a name longer than {NAME_MAX} bytes"
    return None


def _base64(value: Any) -> str:
    content = text(value)
    try:
        base64.b64decode(content, validate=True)
    except binascii.Error:
        raise ValueError("upload content is not valid base64") from None
    if len(content) % 4:  # b64decode takes more padding than it needs: `size` counted a byte fewer (review)
        raise ValueError("upload content is not valid base64 (its length is not a multiple of 4)")
    return content


def uploads(value: Any) -> tuple[Upload, ...]:
    """A list of uploads; no path twice, none the folder of another (the worker could write
    neither: 'a' and 'a/b' failed the job with FileExistsError)."""
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of uploads, not {type_name(value)}")
    found = tuple(checked(str(i), Upload.from_dict, u) for i, u in enumerate(value))
    paths: set[str] = set()
    for upload in found:
        if upload.path in paths:
            raise ValueError(f"upload path {brief(upload.path)} is given twice")
        paths.add(upload.path)
    folders = {folder for path in paths for folder in _parents(path)}
    for path in sorted(paths & folders):
        raise ValueError(f"upload path {brief(path)} is a file and the folder of another upload")
    return found


def _parents(path: str) -> list[str]:
    """'a/b/c' -> ['a/b', 'a']"""
    found = []
    while (path := posixpath.dirname(path)) != "":
        found.append(path)
    return found
