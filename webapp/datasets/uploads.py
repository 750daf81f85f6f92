"""Uploads are streamed to disk by Django (files over FILE_UPLOAD_MAX_MEMORY_SIZE go to a temporary file);
this handler also stops one at the documented size, before the rest of it is received."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

DEFAULT_MAX_BYTES = 200 * 1024 * 1024


def max_upload_bytes() -> int:
    """PTLAB_MAX_DATASET_BYTES (a setting or the environment), default 200 MB."""
    return int(getattr(settings, "PTLAB_MAX_DATASET_BYTES", os.environ.get("PTLAB_MAX_DATASET_BYTES",
                                                                           DEFAULT_MAX_BYTES)))


class SizeLimitHandler(FileUploadHandler):
    """Counts the bytes of the upload and stops it past the limit; `too_big` tells the form."""

    def __init__(self, request=None):
        super().__init__(request)
        self.limit, self.seen, self.too_big = max_upload_bytes(), 0, False

    def receive_data_chunk(self, raw_data, start):
        self.seen += len(raw_data)
        if self.seen > self.limit:
            self.too_big = True
            raise StopUpload(connection_reset=False)
        return raw_data  # the next handler (memory or temporary file) keeps it

    def file_complete(self, file_size):
        return None
