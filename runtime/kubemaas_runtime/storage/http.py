"""``http(s)://`` base URLs (read-only): ``<base>/<relative path>`` for each file."""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings
from kubemaas_runtime.storage.stores import TransientError, retrying, safe_rel
from kubemaas_runtime.storage.uris import HttpLocation


class HttpStore:
    def __init__(self, location: HttpLocation, settings: StorageSettings) -> None:
        self.uri = location.uri
        self.base = location.base
        self.settings = settings

    def url_of(self, rel: str) -> str:
        return f"{self.base}/{quote(safe_rel(self.uri, rel))}"

    def get(self, rel: str, dest: Path) -> None:
        url = self.url_of(rel)
        retrying(self.settings, f"GET {url}", lambda: self._get_once(url, dest))

    def _get_once(self, url: str, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(url, timeout=self.settings.http_timeout_s) as resp, tmp.open("wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            os.replace(tmp, dest)
        except urllib.error.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            if exc.code == 404:
                raise NotFoundError(f"GET {url}: 404 Not Found") from exc
            if exc.code >= 500 or exc.code == 429:
                raise TransientError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
            raise StorageError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            tmp.unlink(missing_ok=True)
            reason = getattr(exc, "reason", exc)
            raise TransientError(f"GET {url}: {reason}") from exc

    def put(self, src: Path, rel: str) -> None:
        raise StorageError(f"{self.uri}: http(s) locations are read-only; upload to a path, pvc:// or s3://")
