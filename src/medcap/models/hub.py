"""Offline-first pretrained weights, the hub's way.

The rule (README, "Pretrained weights"):

- weights already on this machine (the Hugging Face cache, torch's hub cache, a local folder or
  file) are used without asking the network;
- online, missing weights are downloaded as transformers and timm do;
- offline, or with ``HF_HUB_OFFLINE=1``, missing weights are a one-line
  :class:`~medcap.errors.MissingWeightsError` within seconds, with no retry loop.

"Offline" is found with one TCP connection to the hub's host with a short time-out
(:data:`PROBE_TIMEOUT_S`), made before the first download of a process. Without it,
huggingface_hub retries a request that cannot connect with back-off (``http_backoff``: five
retries, waits doubling up to 8 s), which made ``train concepts --config paper`` take 54 s to
fail on a machine without network. When the probe fails, the
download runs in huggingface_hub's own offline mode (``constants.HF_HUB_OFFLINE``, read at
each call by ``is_offline_mode()``), so the libraries look in the local cache only.
"""
from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
from typing import Iterator
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 1.0      # DNS + TCP connect; the hub answers in well under a second when online
_TRUE = {"1", "on", "yes", "true"}


def offline_by_setting() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, now or when huggingface_hub was imported."""
    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    if env in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=8)
def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (asked once per
    process and host). The probe runs in a daemon thread, so a resolver that hangs cannot hold
    the caller longer than ``timeout`` either."""
    parts = urlparse(url)
    host = parts.hostname
    if not host:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="medcap-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.1)
    return bool(result and result[0])


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def offline(url: str | None = None) -> bool:
    """Offline for ``url`` (default: the Hugging Face hub): by setting, or the host cannot be reached."""
    return offline_by_setting() or not reachable(url or hub_endpoint())


@contextlib.contextmanager
def hub_access() -> Iterator[bool]:
    """Inside the block huggingface_hub (and so transformers and timm) downloads only when the hub
    can be reached; otherwise it runs in its offline mode and reads the local cache alone.
    Yields True when offline."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        yield True
        return
    if not offline():
        yield False
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = False


def cached(repo_id: str, filenames: tuple[str, ...]) -> bool:
    """Whether one of ``filenames`` of the hub repo ``repo_id`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, f), str) for f in filenames)
