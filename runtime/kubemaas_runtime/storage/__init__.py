"""Storage: fetch a model bundle from a URI into a directory, and upload bundles.

URIs: a plain path, ``file://``, ``pvc://<claim>/<path>``, ``http(s)://`` and ``s3://bucket/prefix``.
"""

from kubemaas_runtime.storage.errors import NotFoundError, StorageError
from kubemaas_runtime.storage.settings import StorageSettings, load_settings
from kubemaas_runtime.storage.stores import Store, open_store
from kubemaas_runtime.storage.transfer import fetch, upload

__all__ = ["NotFoundError", "StorageError", "StorageSettings", "Store", "fetch", "load_settings", "open_store", "upload"]
