"""Local media storage that never leaves a half-written file under a real name.

Django's FileSystemStorage writes straight to the final name and keeps whatever reached the disk when a write
fails (disk full, quota): a truncated mask or zip that a later read would trust. Here every file is written to
a hidden part file beside it and linked under its real name only when complete; on any failure the part file
is deleted. A full disk or quota becomes `StorageFull` (HTTP 507 in the API, the reason on a failed job)."""

import errno
import os
import uuid

from django.core.files.storage import FileSystemStorage

from hitl.core.errors import StorageFull

FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
MESSAGE = "the media storage is full: nothing was saved; retry once an administrator has freed space"


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class AtomicFileSystemStorage(FileSystemStorage):
    def _save(self, name: str, content) -> str:
        head, tail = os.path.split(name)
        part = os.path.join(head, f".{tail}.{uuid.uuid4().hex}.part")
        try:
            part = super()._save(part, content)  # type: ignore[misc]  # unique part name: written as given
            return self._link(part, name)
        except OSError as exc:
            _remove(self.path(part))
            if exc.errno in FULL:
                raise StorageFull(message=MESSAGE) from exc
            raise
        except BaseException:
            _remove(self.path(part))
            raise

    def _link(self, part: str, name: str) -> str:
        """Give the complete part file its real name (a fresh one if taken), then drop the part name."""
        source = self.path(part)
        while True:
            try:
                os.link(source, self.path(name))
                break
            except FileExistsError:
                name = self.get_available_name(name)
        _remove(source)
        return os.path.relpath(self.path(name), self.location).replace("\\", "/")
