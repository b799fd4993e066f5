"""`gs://bucket/prefix` store through google-cloud-storage.

Create-only writes use `if_generation_match=0`, so GCS itself arbitrates races
(412 Precondition Failed for the loser). Every call passes the client's
`DEFAULT_RETRY` explicitly (transient errors, within RESPAWN_GCS_RETRY_SECONDS), which
also retries uploads that the client's default policy would not retry unguarded: a plain
write puts the same bytes at its path again, so a repeat is harmless, and a create-only
write that landed before its answer was lost comes back 412, which the commit log sorts
out by reading the slot back (RunLog.append: the same bytes are ours).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from .base import NotFound, PreconditionFailed, StoreMisconfigured, TransientStoreError, check_path

RETRY_SECONDS_ENV = "RESPAWN_STORAGE_RETRY_SECONDS"
"""How long to keep retrying a failing storage call before giving up (exit 75)."""


def _client() -> Any:
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT", "local"), credentials=anonymous)
    return storage.Client()


class GCSStore:
    """Objects live under `prefix/` in one bucket."""

    def __init__(self, uri: str, client: Any = None) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud.storage.retry import DEFAULT_RETRY

        parsed = urlparse(uri)
        if parsed.scheme != "gs" or not parsed.netloc:
            raise ValueError(f"not a gs:// URI: {uri!r} (use gs://bucket/prefix)")
        self.uri = uri
        self.prefix = parsed.path.strip("/")
        self._client = client or _client()
        self._bucket = self._client.bucket(parsed.netloc)
        try:
            seconds = float(os.environ.get(RETRY_SECONDS_ENV, "60"))
        except ValueError:
            raise ValueError(f"{RETRY_SECONDS_ENV}: not a number of seconds") from None
        self._retry = DEFAULT_RETRY.with_timeout(seconds)
        # Per request: (connect, read-inactivity). A storage that accepts connections
        # and never answers must not hold a call longer than the retry budget allows.
        self._timeout = (min(10.0, max(1.0, seconds)), min(60.0, max(5.0, seconds)))
        self._gexc = gexc

    def _name(self, path: str, *, prefix: bool = False) -> str:
        check_path(path, prefix=prefix)
        return f"{self.prefix}/{path}" if self.prefix else path

    def _sorted_error(self, e: Exception, path: str, *, object_may_be_missing: bool = True) -> Exception:
        gexc = self._gexc
        if isinstance(e, gexc.NotFound) and not object_may_be_missing:
            # Listing and writing never miss an object: the bucket itself is not there.
            return StoreMisconfigured(
                f"bucket {self._bucket.name!r} does not exist ({self.uri}): create it or fix the checkpoint URI"
            )
        if isinstance(e, gexc.NotFound):
            return NotFound(path)
        if isinstance(e, (gexc.Forbidden, gexc.Unauthorized)):
            return StoreMisconfigured(
                f"{self.uri}: {path}: access denied ({getattr(e, 'message', e)}): grant the "
                "pod's identity access to the checkpoint bucket"
            )
        if isinstance(e, gexc.PreconditionFailed):
            return PreconditionFailed(path)
        if isinstance(
            e,
            (
                gexc.TooManyRequests,
                gexc.ServerError,
                gexc.RetryError,
                gexc.ServiceUnavailable,
                ConnectionError,
                TimeoutError,
            ),
        ):
            return TransientStoreError(f"{path}: {e}")
        import requests

        if isinstance(e, requests.exceptions.RequestException):
            return TransientStoreError(f"{path}: {e}")
        return e

    def put(self, path: str, data: bytes | memoryview, *, if_absent: bool = False) -> None:
        blob = self._bucket.blob(self._name(path))
        try:
            blob.upload_from_string(
                bytes(data),
                content_type="application/octet-stream",
                if_generation_match=0 if if_absent else None,
                retry=self._retry,
                timeout=self._timeout,
            )
        except Exception as e:
            raise self._sorted_error(e, path, object_may_be_missing=False) from e

    def get(self, path: str) -> bytes:
        try:
            data: bytes = self._bucket.blob(self._name(path)).download_as_bytes(
                retry=self._retry, timeout=self._timeout
            )
            return data
        except Exception as e:
            raise self._sorted_error(e, path) from e

    def exists(self, path: str) -> bool:
        try:
            return bool(self._bucket.blob(self._name(path)).exists(retry=self._retry, timeout=self._timeout))
        except Exception as e:
            raise self._sorted_error(e, path) from e

    def list(self, prefix: str) -> list[str]:
        full = self._name(prefix, prefix=True) if prefix else (f"{self.prefix}/" if self.prefix else "")
        cut = len(self.prefix) + 1 if self.prefix else 0
        try:
            blobs = self._client.list_blobs(self._bucket, prefix=full, retry=self._retry, timeout=self._timeout)
            return sorted(b.name[cut:] for b in blobs)
        except Exception as e:
            raise self._sorted_error(e, prefix, object_may_be_missing=False) from e

    def delete(self, path: str) -> None:
        try:
            self._bucket.blob(self._name(path)).delete(retry=self._retry, timeout=self._timeout)
        except self._gexc.NotFound:
            pass
        except Exception as e:
            raise self._sorted_error(e, path) from e
