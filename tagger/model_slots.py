"""The models one worker process holds: one per role, loaded once, swapped between batches.

A process tags batches of ordinary jobs with the active version and batches of shadow
jobs (`tagger model compare`) with their candidate. It keeps one model per role (ROLES),
so a worker taking batches of both in turn never reloads, and one that never sees a
shadow job holds one model. How a version is loaded (artifact cache, runtime) is the
caller's ``load``; this module only decides when, and who waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tagger.model import LoadedModel

#: The roles a loaded model plays in a process: the active version's (ordinary jobs) and
#: a shadow job's candidate.
ROLES = ("active", "shadow")


class ModelSlots:
    """Loaded models by version, one per role; ``load(version_row)`` loads one."""

    def __init__(self, load: Callable[[Any], LoadedModel]) -> None:
        self._load = load
        self._lock = threading.Lock()
        # the loaded models and the loads in flight, by version; the version each role
        # uses now
        self._models: dict[str, LoadedModel] = {}
        self._loading: dict[str, Future[LoadedModel]] = {}
        self._roles: dict[str, str] = {}

    def model_for(self, version: Any, *, shadow: bool = False) -> LoadedModel:
        """The loaded model of ``version`` (a model_versions row: ``.version`` names it);
        loads it (once) when the role's version changed, between batches: a roll-out needs
        no restart. ``shadow``: for a shadow job's batch.

        A version no role uses any more is dropped before another is loaded, so a process
        holds at most two models. When a roll-out activates the candidate a worker was
        shadowing, that model is already loaded.

        The load runs in a thread of its own and the batch waits for it. A batch's soft
        time limit interrupts only the wait: the load carries on, and the next delivery
        waits for the same load instead of starting over, so a model that takes longer
        to load than the limit (a slow or busy host) is still loaded in the end. A load
        that failed is forgotten: the next batch loads afresh.
        """
        name = version.version
        with self._lock:
            self._roles[ROLES[1] if shadow else ROLES[0]] = name
            used = set(self._roles.values())
            # Drop what no role uses before loading anything: memory holds what is needed.
            for held in [v for v in (*self._models, *self._loading) if v not in used]:
                self._models.pop(held, None)
                self._loading.pop(held, None)
            if name in self._models:
                return self._models[name]
            if name not in self._loading:
                self._loading[name] = self._start_load(version)
            future = self._loading[name]
        try:
            model = future.result()
        finally:
            with self._lock:
                if future.done() and self._loading.get(name) is future:
                    del self._loading[name]  # loaded, or failed: a later batch loads afresh
                    if future.exception() is None:
                        self._models[name] = future.result()
        return model

    @property
    def loaded_versions(self) -> list[str]:
        """The versions whose models this process holds now."""
        with self._lock:
            return sorted(self._models)

    def _start_load(self, version: Any) -> Future[LoadedModel]:
        future: Future[LoadedModel] = Future()

        def load() -> None:
            try:
                future.set_result(self._load(version))
            except BaseException as exc:  # handed to the waiting batch, which reports it
                future.set_exception(exc)

        # A daemon: a worker shutting down does not wait for a load nobody needs any more.
        threading.Thread(target=load, name=f"load-{version.version}", daemon=True).start()
        return future
