"""``Arch.pretrained: True``: PaddleClas's published weights, downloaded once into its cache.

PaddleClas keeps one address per model name (its model zoo) and caches the downloaded file
under ``~/.paddleclas/weights/<file name of the address>``; we use the same folder, so a file
PaddleClas already downloaded is reused, and the same file names.

- A cached file is used as it is (no network); if it does not load, the error names it and
  says to delete it.
- A download goes to a temporary file in the cache folder, is checked by loading it (the
  restricted unpickler of ``ppcls.utils.safe_load`` and the shape check of
  ``ppcls.utils.weights``), and only then renamed into the cache: a failed or partial
  download never leaves a file that would later be taken for the real one.
- Without network, one ``CheckpointError`` line gives the address and the path to put the
  file at.

Environment: ``PPCLS_WEIGHTS_HOME`` moves the cache folder; ``PPCLS_PRETRAINED_BASE_URL``
replaces the address's folder (a mirror; the tests serve a file from 127.0.0.1).
"""

import http.client
import os
import shutil
import urllib.error
import urllib.request

from ppcls.utils.errors import CheckpointError

WEIGHTS_HOME_ENV = "PPCLS_WEIGHTS_HOME"
BASE_URL_ENV = "PPCLS_PRETRAINED_BASE_URL"
TIMEOUT = 60  # seconds without data before a download is given up


def weights_home():
    """PaddleClas's weight cache, ``~/.paddleclas/weights`` (or ``$PPCLS_WEIGHTS_HOME``)."""
    return os.environ.get(WEIGHTS_HOME_ENV) or os.path.join(os.path.expanduser("~"),
                                                            ".paddleclas", "weights")


def resolve_url(url):
    """``url``, or the same file name under ``$PPCLS_PRETRAINED_BASE_URL`` when that is set."""
    base = os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if base else url


def cache_path(url):
    return os.path.join(weights_home(), url.rsplit("/", 1)[-1])


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _download(url, dest):
    """``url`` -> the file ``dest``; any failure is one ``OSError``-like message."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f, length=1 << 20)
        expected = response.headers.get("Content-Length")
        if expected is not None and f.tell() != int(expected):
            raise OSError(f"got {f.tell()} of {expected} bytes")


def fetch_pretrained(url, load, name="Arch.pretrained=True"):
    """Load PaddleClas's published weights at ``url`` with ``load(path)``; returns the cache path.

    ``load`` reads and checks the file and loads it into the model (raising
    :class:`CheckpointError` when it does not fit); it runs on the cached file, or on a fresh
    download before that is moved into the cache.
    """
    url = resolve_url(url)
    path = cache_path(url)
    if os.path.isfile(path):
        from ppcls.utils import logger

        try:
            load(path)
        except CheckpointError as err:
            raise CheckpointError(f"{name}: the cached file {path} does not load ({err}); delete "
                                  "it to download it again") from None
        logger.info(f"{name}: loaded {path} (cached from {url})")
        return path
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".{os.getpid()}.{os.path.basename(path)}")  # keeps the suffix
    try:
        os.makedirs(folder, exist_ok=True)
        _download(url, tmp)
    except (OSError, ValueError, http.client.HTTPException) as err:  # URLError is an OSError
        _remove(tmp)
        reason = getattr(err, "reason", None) or err
        raise CheckpointError(f"{name}: cannot download {url} ({reason}); download it yourself "
                              f"and put it at {path}") from None
    try:
        load(tmp)
    except CheckpointError as err:
        _remove(tmp)
        raise CheckpointError(f"{name}: the file downloaded from {url} is not usable: "
                              f"{str(err).replace(tmp, path)}") from None
    try:
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise CheckpointError(f"{name}: cannot write the cache file {path} ({err.strerror or err}); "
                              f"set {WEIGHTS_HOME_ENV} to a writable folder") from None
    from ppcls.utils import logger

    logger.info(f"{name}: downloaded {url} to {path}")
    return path


__all__ = ["BASE_URL_ENV", "WEIGHTS_HOME_ENV", "cache_path", "fetch_pretrained", "resolve_url",
           "weights_home"]
