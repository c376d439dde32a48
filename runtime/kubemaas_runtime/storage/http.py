"""``http(s)://`` base URLs (read-only): ``<base>/<relative path>`` for each file.

Each download is bounded (see streams.py): the socket timeout is the stall timeout (or the
time left, if less), the fetch's deadline is checked after every read, and the body must
carry exactly the bytes the manifest records. Redirects follow a policy of their own
(``RedirectPolicy``): urllib's default also follows ``ftp://`` targets.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO
from urllib.parse import quote, urljoin, urlsplit

from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings
from kubemaas_runtime.storage.stores import retrying, safe_rel
from kubemaas_runtime.storage.streams import (
    TIMEOUT_SLACK_S,
    Deadline,
    TransientError,
    check_announced,
    copy_stream,
    stall_message,
    truncated_message,
)
from kubemaas_runtime.storage.uris import HttpLocation


class RedirectRefused(StorageError):
    """A redirect the policy does not follow (another scheme, https -> http, too many)."""


def redirect_allowed(source: str, target: str) -> bool:
    """Same scheme (http -> http, https -> https) or the upgrade http -> https; nothing else.

    The rule of browsers' mixed-content policy and of curl's ``--proto-redir``: never leave
    HTTP(S), never downgrade TLS.
    """
    old, new = urlsplit(source).scheme.lower(), urlsplit(target).scheme.lower()
    return new in ("http", "https") and (new == old or (old, new) == ("http", "https"))


class RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handler with the scheme rule above and a redirect budget."""

    max_redirections = 30
    """urllib's own cap (its loop detection stays); ``max_redirects`` (at most 30) fires first."""

    def __init__(self, max_redirects: int) -> None:
        super().__init__()
        self.max_redirects = max_redirects

    def http_error_302(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: http.client.HTTPMessage
    ) -> object:
        """Check the target before urllib looks at it (urllib refuses only schemes other than http, https, ftp)."""
        target = headers.get("location") or headers.get("uri")
        if target:
            newurl = urljoin(req.full_url, target)
            followed = sum(getattr(req, "redirect_dict", {}).values())
            if followed >= self.max_redirects:
                raise RedirectRefused(
                    f"GET {req.full_url}: HTTP {code} redirect to {newurl}: more than {self.max_redirects} "
                    "redirects (KUBEMAAS_MAX_REDIRECTS)"
                )
            if not redirect_allowed(req.full_url, newurl):
                raise RedirectRefused(
                    f"GET {req.full_url}: HTTP {code} redirect to {newurl} refused: only same-scheme "
                    "or http -> https redirects are followed"
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class HttpStore:
    def __init__(self, location: HttpLocation, settings: StorageSettings, deadline: Deadline) -> None:
        self.uri = location.uri
        self.base = location.base
        self.settings = settings
        self.deadline = deadline
        self._opener = urllib.request.build_opener(RedirectPolicy(settings.max_redirects))

    def url_of(self, rel: str) -> str:
        return f"{self.base}/{quote(safe_rel(self.uri, rel))}"

    def get(self, rel: str, dest: Path, size: int | None = None) -> None:
        url = self.url_of(rel)
        retrying(self.settings, f"GET {url}", lambda: self._get_once(url, dest, size), self.deadline)

    def _get_once(self, url: str, dest: Path, size: int | None) -> None:
        what = f"GET {url}"
        self.deadline.check(what)
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        received = 0
        timeout = max(0.001, min(self.settings.stall_timeout_s, self.deadline.remaining()))
        try:
            with self._opener.open(url, timeout=timeout) as resp, tmp.open("wb") as out:
                announced = _content_length(resp.headers)
                check_announced(what, announced, size, self.settings.max_bundle_bytes)
                expected = size if size is not None else announced

                def read1(n: int) -> bytes:
                    nonlocal received
                    chunk: bytes = resp.read1(n)
                    received += len(chunk)
                    return chunk

                copy_stream(
                    read1, out, what=what, expected=expected, limit=self.settings.max_bundle_bytes,
                    deadline=self.deadline, stall_s=self.settings.stall_timeout_s,
                )
            os.replace(tmp, dest)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise NotFoundError(f"{what}: 404 Not Found") from exc
            if exc.code >= 500 or exc.code == 429:
                raise TransientError(f"{what}: HTTP {exc.code} {exc.reason}") from exc
            raise StorageError(f"{what}: HTTP {exc.code} {exc.reason}") from exc
        except http.client.IncompleteRead as exc:  # the connection closed before Content-Length
            got = received + len(exc.partial)
            expected = size if size is not None else got + (exc.expected or 0)
            raise TransientError(truncated_message(what, expected, got)) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            self.deadline.check(what, received if received else None, slack=TIMEOUT_SLACK_S)
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise TransientError(stall_message(what, self.settings.stall_timeout_s, received)) from exc
            raise TransientError(f"{what}: {reason}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, src: Path, rel: str) -> None:
        raise StorageError(f"{self.uri}: http(s) locations are read-only; upload to a path, pvc:// or s3://")


def _content_length(headers: http.client.HTTPMessage) -> int | None:
    raw = headers.get("Content-Length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
