"""Trying the challenger on live traffic (serving.rollout), next to the champion that answers.

    off      the champion answers every request (models/)
    shadow   the champion answers; the challenger (models/challenger/) scores every request too,
             on a thread of its own after the answer is on its way, and its rows are logged
    canary   serving.canary_share of requests are answered by the challenger, chosen by a hash
             of the request key (header X-Request-Key, else the request id): the same key always
             gets the same model

With rollout on and no usable challenger bundle the service warns once and serves the champion
alone: a missing challenger must not take the service down.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..bundle import Bundle, BundleError, load_bundle
from ..config import Settings
from ..runtimes import Runtime, load_runtime

log = logging.getLogger(__name__)
CHAMPION = "champion"
CHALLENGER = "challenger"
# Shadow scoring waits in a queue when requests come faster than the challenger scores them;
# past this many waiting requests new ones are not shadowed (the answers never wait for it).
MAX_SHADOW_BACKLOG = 1000


@dataclass(frozen=True)
class Model:
    """A loaded bundle, the runtime that scores with it, and its role in the rollout."""

    role: str
    bundle: Bundle
    runtime: Runtime

    @property
    def version(self) -> str:
        return self.bundle.version


def in_canary(key: str, share: float) -> bool:
    """Whether `key` falls in the first `share` of the hash space: stable across requests,
    workers and restarts, and uniform over keys."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * 2**64


class Rollout:
    """Which model answers a request, and the shadow scoring of the challenger."""

    def __init__(self, mode: str, share: float, challenger: Model | None) -> None:
        self.mode = mode if challenger is not None else "off"
        self.share = share
        self.challenger = challenger
        self._backlog = threading.BoundedSemaphore(MAX_SHADOW_BACKLOG)
        self._shadow = (
            ThreadPoolExecutor(1, thread_name_prefix="shadow") if self.mode == "shadow" else None
        )

    @classmethod
    def load(cls, settings: Settings, champion: Bundle) -> Rollout:
        mode, directory = settings.serving.rollout, settings.challenger_dir
        if mode == "off":
            return cls(mode, 0.0, None)
        try:
            bundle = load_bundle(directory, trusted_types=settings.serving.trusted_types)
            if bundle.schema.names != champion.schema.names:
                raise BundleError(f"{directory}/ takes other features than the champion")
            runtime = load_runtime(settings.serving.runtime, bundle)
        except BundleError as exc:
            log.warning("serving.rollout is %s; serving the champion alone: %s", mode, exc)
            return cls("off", 0.0, None)
        log.info("Rollout %s: challenger version %s from %s/", mode, bundle.version, directory)
        return cls(mode, settings.serving.canary_share, Model(CHALLENGER, bundle, runtime))

    def answering(self, key: str) -> Model | None:
        """The challenger when it answers the request with this key (canary), else None."""
        if self.mode == "canary" and in_canary(key, self.share):
            return self.challenger
        return None

    def shadow(self, job: Callable[[Model], None]) -> None:
        """Run `job(challenger)` on the shadow thread, unless shadowing is off or backed up."""
        if self._shadow is None or self.challenger is None:
            return
        if not self._backlog.acquire(blocking=False):
            log.warning("Shadow scoring is %d requests behind: skipped one.", MAX_SHADOW_BACKLOG)
            return
        self._shadow.submit(self._run, job, self.challenger)

    def _run(self, job: Callable[[Model], None], model: Model) -> None:
        try:
            job(model)
        except Exception:  # the challenger failing must never reach the champion's answers
            log.exception("Shadow scoring failed")
        finally:
            self._backlog.release()

    def close(self) -> None:
        """Finish the queued shadow scoring (its rows go to the log before the log closes)."""
        if self._shadow is not None:
            self._shadow.shutdown(wait=True)
