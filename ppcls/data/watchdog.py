"""A bounded wait for the data loader's worker processes.

Paddle's ``DataLoader`` waits for its workers without limit (its ``timeout`` argument only sets
how often it polls). A worker that deadlocks (for example in the shared-memory allocator, whose
lock a forked process can inherit held) therefore hangs training silently. :func:`bounded`
waits at most ``PPCLS_DATA_TIMEOUT`` seconds (default 600; ``0``: no limit) for each batch from
worker processes; after that it stops the workers (Paddle then ends the iteration) and raises
one ``DataError`` saying what happened and what to change.
"""

import os
import signal
import threading

from ppcls.utils import logger
from ppcls.utils.errors import ConfigError, DataError

ENV = "PPCLS_DATA_TIMEOUT"
DEFAULT_SECONDS = 600.0


def wait_limit():
    """Seconds to wait for one batch from the workers (``None``: no limit)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{ENV} expects a number of seconds >= 0 (0: no limit), got {text!r}")
    return value or None


def _stop_workers(batches):
    for worker in getattr(batches, "_workers", None) or []:
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except (OSError, TypeError):
            pass


def bounded(batches, num_workers):
    """Yield from Paddle's batch iterator ``batches``, at most :func:`wait_limit` seconds a batch
    when ``num_workers`` > 0 (in-process loading, ``num_workers: 0``, cannot deadlock this way)."""
    limit = wait_limit() if num_workers else None
    if limit is None:
        yield from batches
        return
    message = (f"no batch from the {num_workers} data loader worker process(es) for {limit:g} s: "
               "they look deadlocked and were stopped (see README, 'Data loader workers'); set "
               "DataLoader.<mode>.loader.use_shared_memory: False or num_workers: 0, or allow "
               f"more time with {ENV}=SECONDS (0: no limit)")
    while True:
        fired = threading.Event()

        def expire():
            fired.set()
            logger.error(message)
            _stop_workers(batches)

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            item = next(batches)
        except StopIteration:
            return
        except Exception:
            if fired.is_set():
                raise DataError(message) from None
            raise
        finally:
            timer.cancel()
        if fired.is_set():
            raise DataError(message)
        yield item


__all__ = ["bounded", "wait_limit", "ENV", "DEFAULT_SECONDS"]
