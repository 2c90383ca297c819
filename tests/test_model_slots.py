"""The models a worker process holds (ModelSlots): one load per version, outliving a
batch's soft time limit, one model per role, the unused one dropped."""

from __future__ import annotations

import signal
import time
from types import SimpleNamespace

import pytest

from tagger.model_slots import ModelSlots


class Interrupted(Exception):
    """What Celery's soft time limit raises in the waiting thread (SoftTimeLimitExceeded)."""


def _slots(load_seconds: float, calls: list[str], fail_first: bool = False) -> ModelSlots:
    # A pure unit test: the load itself is a slow stand-in (a real load takes seconds of
    # TensorFlow; what is under test is who waits for it and who starts it).
    failures = [RuntimeError("artifact unreadable")] if fail_first else []

    def load(version):
        if failures:
            calls.append("failed")
            raise failures.pop()
        calls.append(version.version)
        time.sleep(load_seconds)
        return SimpleNamespace(version=version.version, runtime="stand-in")

    return ModelSlots(load)


def _interrupt_after(seconds: float) -> None:
    def handler(signum, frame):
        raise Interrupted

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def test_a_load_interrupted_by_the_time_limit_is_finished_not_restarted():
    """The second delivery waits for the first one's load instead of starting another."""
    calls: list[str] = []
    slots = _slots(0.6, calls)
    v1 = SimpleNamespace(version="v1", artifact_uri="unused")
    _interrupt_after(0.2)
    with pytest.raises(Interrupted):
        slots.model_for(v1)
    model = slots.model_for(v1)
    assert model.version == "v1" and calls == ["v1"]
    assert slots.model_for(v1) is model and calls == ["v1"]


def test_a_failed_load_is_tried_again_by_the_next_batch():
    """A load that raised is forgotten: the next batch loads afresh and gets the model."""
    calls: list[str] = []
    slots = _slots(0.0, calls, fail_first=True)
    v1 = SimpleNamespace(version="v1", artifact_uri="unused")
    with pytest.raises(RuntimeError, match="artifact unreadable"):
        slots.model_for(v1)
    assert slots.model_for(v1).version == "v1" and calls == ["failed", "v1"]


def _v(name: str) -> SimpleNamespace:
    return SimpleNamespace(version=name, artifact_uri="")


def test_a_new_version_replaces_the_loaded_one():
    """Activating another version loads it once; the old model is dropped."""
    calls: list[str] = []
    slots = _slots(0.0, calls)
    assert slots.model_for(_v("v1")).version == "v1"
    assert slots.model_for(_v("v2")).version == "v2"
    assert calls == ["v1", "v2"] and slots.loaded_versions == ["v2"]


def test_active_and_shadow_models_stay_loaded_side_by_side():
    """Batches of an ordinary job and a shadow job in turn load each version once; a new
    candidate replaces the old candidate only, and activating the candidate reuses it."""
    calls: list[str] = []
    slots = _slots(0.0, calls)
    for _ in range(3):
        assert slots.model_for(_v("v1")).version == "v1"
        assert slots.model_for(_v("c1"), shadow=True).version == "c1"
    assert calls == ["v1", "c1"] and slots.loaded_versions == ["c1", "v1"]
    slots.model_for(_v("c2"), shadow=True)
    assert calls == ["v1", "c1", "c2"] and slots.loaded_versions == ["c2", "v1"]
    # c2 is activated: the active role takes the loaded model, v1 is dropped
    slots.model_for(_v("c2"))
    assert calls == ["v1", "c1", "c2"] and slots.loaded_versions == ["c2"]
