"""A size guard at the front of Django's upload handlers: a file larger than HITL_MAX_UPLOAD_BYTES stops
being received the moment it passes the limit (the rest of the body is read and dropped, never written to
a temporary file), and the view answers 413. Without it, Django would spool the whole body to disk first."""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

from hitl.core.apis.errors import PayloadTooLarge


class UploadSizeGuard(FileUploadHandler):
    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > settings.HITL_MAX_UPLOAD_BYTES:
            self.request.upload_too_large = True  # type: ignore[union-attr]
            raise StopUpload(connection_reset=False)
        return raw_data  # on to the memory / temporary-file handlers

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler makes the file


def guarded_upload_data(request):
    """The request's parsed multipart body, or PayloadTooLarge (413) when the guard stopped a file."""
    data = request.data  # parses the body, through UploadSizeGuard
    if getattr(request._request, "upload_too_large", False):
        raise PayloadTooLarge(f"uploads are limited to {settings.HITL_MAX_UPLOAD_BYTES} bytes per file")
    return data
