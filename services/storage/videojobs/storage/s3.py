"""StorageService on MinIO or any S3-compatible server, through the ``minio`` client."""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import shutil
import tempfile
import threading
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Iterator, NoReturn, Optional

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from minio.helpers import check_bucket_name
from minio.time import to_amz_date
from urllib3.util import Retry, Timeout

from videojobs.common.clock import host_now
from videojobs.common.errors import StorageObjectNotFound, TemporaryFault, out_of_space_is_temporary
from videojobs.common.ports.storage import StorageService, StoredObject

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's lower bound for every part but the last
DEFAULT_PART_SIZE = 8 * 1024 * 1024

_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "NoSuchBucket", "NotFound", "ResourceNotFound"}
_BUCKET_TAKEN_CODES = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}

log = logging.getLogger(__name__)


class ServerClock:
    """The S3 server's clock as this host reads it: what every request is signed by.

    A signature carries its time, and S3 servers refuse one more than 15 minutes off their own clock
    (MinIO answers RequestTimeTooSkewed, SeaweedFS AccessDenied): a pod on a node whose clock is off could
    reach the bucket no more. As the AWS SDKs for Java, JavaScript, Ruby and C++ do, a refusal whose answer's
    ``Date`` is more than ``THRESHOLD`` from the time the request was signed by sets the correction to that
    difference, and the request is made again once; a refusal with the clocks in agreement is a real one.
    The correction follows the host back when its clock is fixed: the next request is refused and measured.
    """

    THRESHOLD = timedelta(minutes=5)

    def __init__(self) -> None:
        self.correction = timedelta(0)  # the server's clock minus this host's

    def now(self) -> datetime:
        return host_now() + self.correction

    def corrected(self, refusal: S3Error, sent: datetime, signed_with: timedelta) -> bool:
        """Whether `refusal`, of a request sent at host time `sent` and signed with the correction
        `signed_with`, came from a server whose clock disagreed; if so, the correction now agrees with it."""
        response = refusal.response
        if getattr(response, "status", None) not in (400, 403):  # skew refusals are 403 (400 from some servers)
            return False
        try:
            server = parsedate_to_datetime(response.headers.get("Date", ""))
        except (TypeError, ValueError):
            return False
        # The Date header counts whole seconds: its second's middle is the best reading.
        needed = server + timedelta(seconds=0.5) - sent
        if abs(needed - signed_with) <= self.THRESHOLD:
            return False  # the clocks agreed: a refusal for another reason
        self.correction = needed  # set, not added: concurrent refusals measure the same
        log.warning("this host's clock is %.0f s %s the S3 server's: requests are signed by the server's clock "
                    "(fix this host's time synchronisation)", abs(needed.total_seconds()),
                    "behind" if needed > timedelta(0) else "ahead of")
        return True


class _ServerClockMinio(Minio):
    """minio's client, signing by a ``ServerClock``. The two steps extended are minio's private ones:
    tests/integration/test_s3_storage.py runs a process whose host clock is off, and fails if a minio
    release signs elsewhere."""

    def __init__(self, *args: Any, clock: ServerClock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def _build_headers(self, host: str, headers: Any, body: Any, creds: Any) -> tuple[Any, datetime]:
        headers, _ = super()._build_headers(host, headers, body, creds)
        date = self._clock.now()
        headers["x-amz-date"] = to_amz_date(date)
        return headers, date

    def _url_open(self, *args: Any, **kwargs: Any) -> Any:
        signed_with, sent = self._clock.correction, host_now()
        try:
            return super()._url_open(*args, **kwargs)
        except S3Error as exc:
            if not self._clock.corrected(exc, sent, signed_with):
                raise
        return super()._url_open(*args, **kwargs)


class S3Storage(StorageService):
    """Objects in one bucket (optionally under a key prefix) of an S3-compatible server.

    Uploads stream the source in parts of ``part_size`` bytes (multipart above one
    part), so memory stays around a couple of parts whatever the file size; a source
    that raises mid-way makes minio abort the multipart upload, leaving no object.
    Downloads go to a temporary file (OpenCV needs a path); ``release_local`` or
    ``local_copy`` deletes it. The bucket is created on first write or ``ping``;
    nothing connects at construction. Unreachable servers and 5xx answers raise
    ``TemporaryFault``.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        access_key: str = "",
        secret_key: str = "",
        secure: bool = False,
        region: str = "us-east-1",
        prefix: str = "",
        part_size: int = DEFAULT_PART_SIZE,
        parallel_uploads: int = 1,
        tmp_dir: Optional[Path] = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        check_bucket_name(bucket, strict=True)  # ValueError now rather than on first use
        scheme, _, rest = endpoint.partition("://")
        if rest:  # accept http://host:port and https://host:port as well as host:port
            secure = scheme == "https"
            endpoint = rest
        endpoint = endpoint.rstrip("/")
        self._endpoint = endpoint
        self._bucket = bucket
        self._region = region
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._part_size = part_size
        self._parallel_uploads = max(1, parallel_uploads)
        self._tmp_dir = Path(tmp_dir) if tmp_dir is not None else None
        # minio's default pool retries 5 times with 5-minute timeouts: far too long
        # to notice that the server is down.
        http = urllib3.PoolManager(
            timeout=Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            retries=Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.clock = ServerClock()
        self._client = _ServerClockMinio(
            endpoint,
            clock=self.clock,
            access_key=access_key or None,
            secret_key=secret_key or None,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._lock = threading.Lock()
        self._bucket_ready = False
        self._locals: set[Path] = set()

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> Minio:
        return self._client

    # -- StorageService ------------------------------------------------------------
    def save_file(self, src: BinaryIO, dest_path: str) -> str:
        key = self._key(dest_path)
        self._ensure_bucket()
        content_type = mimetypes.guess_type(dest_path)[0] or "application/octet-stream"
        try:
            self._client.put_object(
                self._bucket,
                key,
                src,
                length=-1,
                part_size=self._part_size,
                num_parallel_uploads=self._parallel_uploads,
                content_type=content_type,
            )
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            _raise_translated(exc, dest_path)
        # Anything else came from the source stream (e.g. UploadTooLarge): minio has
        # aborted the multipart upload already, so let it through unchanged.
        return dest_path

    def load_file(self, path: str) -> Path:
        key = self._key(path)
        if self._tmp_dir is not None:
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
        with out_of_space_is_temporary("the scratch folder"):  # where the copy is written
            folder = Path(tempfile.mkdtemp(prefix="videojobs-s3-", dir=self._tmp_dir))
            local = folder / (PurePosixPath(key).name or "object")
            try:
                self._client.fget_object(
                    self._bucket, key, str(local), tmp_file_path=str(local) + ".part"
                )
            except BaseException as exc:
                shutil.rmtree(folder, ignore_errors=True)
                if isinstance(exc, (MinioException, urllib3.exceptions.HTTPError)):
                    _raise_translated(exc, path)
                raise
        with self._lock:
            self._locals.add(local)
        return local

    def read_range(self, path: str, start: int, end: int) -> bytes:
        key = self._key(path)
        if end <= start:
            return b""
        response = None
        try:
            response = self._client.get_object(self._bucket, key, offset=start, length=end - start)
            return response.read()
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            if isinstance(exc, S3Error) and exc.code == "InvalidRange":  # from past the end: nothing there
                return b""
            _raise_translated(exc, path)
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    @contextlib.contextmanager
    def open_stored(self, path: str) -> Iterator[StoredObject]:
        """The object read as the GET's body arrives: nothing is written to disk."""
        key = self._key(path)
        try:
            response = self._client.get_object(self._bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            _raise_translated(exc, path)

        def read(size: int) -> bytes:
            try:
                return response.read(size)
            except (MinioException, urllib3.exceptions.HTTPError) as exc:  # cut off part-way
                _raise_translated(exc, path)

        try:
            yield StoredObject(int(response.headers["Content-Length"]), read)
        finally:
            response.close()
            response.release_conn()

    def release_local(self, local: Path) -> None:
        local = Path(local)
        with self._lock:
            if local not in self._locals:
                return  # not one of our temp copies: never delete what we did not create
            self._locals.discard(local)
        shutil.rmtree(local.parent, ignore_errors=True)

    def delete_file(self, path: str) -> None:
        key = self._key(path)
        try:
            self._client.remove_object(self._bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            if _is_not_found(exc):
                return
            _raise_translated(exc, path)

    def exists(self, path: str) -> bool:
        key = self._key(path)
        try:
            self._client.stat_object(self._bucket, key)
        except (MinioException, urllib3.exceptions.HTTPError) as exc:
            if _is_not_found(exc):
                return False
            _raise_translated(exc, path)
        return True

    def ping(self) -> None:
        with self._lock:
            self._bucket_ready = False
        self._ensure_bucket()

    # -- internals -----------------------------------------------------------------
    def _key(self, path: str) -> str:
        segments = path.split("/")
        if not path or "\\" in path or any(seg in ("", ".", "..") for seg in segments):
            raise ValueError(f"storage key {path!r} is not a relative slash-separated path")
        return self._prefix + path

    def _ensure_bucket(self) -> None:
        with self._lock:
            if self._bucket_ready:
                return
            try:
                if not self._client.bucket_exists(self._bucket):
                    try:
                        self._client.make_bucket(self._bucket, location=self._region)
                    except S3Error as exc:
                        if exc.code not in _BUCKET_TAKEN_CODES:  # another process won the race
                            raise
            except (MinioException, urllib3.exceptions.HTTPError) as exc:
                _raise_translated(exc, f"bucket {self._bucket}")
            self._bucket_ready = True


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, S3Error) and exc.code in _NOT_FOUND_CODES


def _raise_translated(exc: BaseException, path: str) -> NoReturn:
    if _is_not_found(exc):
        raise StorageObjectNotFound(path) from exc
    if isinstance(exc, S3Error):
        status = getattr(exc.response, "status", 0) or 0
        if status < 500 and exc.code not in {"SlowDown", "RequestTimeout", "ServiceUnavailable"}:
            raise exc  # access denied, bad request...: configuration, not worth retrying
    reason = getattr(exc, "reason", None) or exc  # MaxRetryError: the underlying failure
    raise TemporaryFault(
        f"object storage failed on {path}: {type(reason).__name__} {reason}"
    ) from exc
