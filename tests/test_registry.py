"""Model versions: registering is idempotent, activating keeps exactly one active."""

from __future__ import annotations

import pytest

from tagger.exceptions import UnknownModelVersion
from tagger.registry import (
    activate_model_version,
    get_active_model_version,
    list_model_versions,
)
from tests.factories import add_model_version


def _register(session, version, activate=False):
    return add_model_version(session, version, activate=activate)


def test_register_twice_keeps_one_row(session_factory):
    """Registering the same version again changes nothing but the artifact address."""
    with session_factory.begin() as s:
        _register(s, "v1")
        _register(s, "v1")
    with session_factory() as s:
        assert [v.version.version for v in list_model_versions(session=s)] == ["v1"]


def test_activate_switches_the_single_active_version(session_factory):
    """Activating v2 deactivates v1."""
    with session_factory.begin() as s:
        _register(s, "v1", activate=True)
        _register(s, "v2")
    with session_factory.begin() as s:
        activate_model_version(session=s, version="v2")
    with session_factory() as s:
        assert get_active_model_version(session=s).version == "v2"
        assert {v.version.version: v.version.is_active for v in list_model_versions(session=s)} == {
            "v1": False,
            "v2": True,
        }


def test_unknown_version_changes_nothing(session_factory):
    """Activating an unregistered version fails, naming what is registered."""
    with session_factory.begin() as s:
        _register(s, "v1", activate=True)
    with (
        pytest.raises(UnknownModelVersion, match=r"'nope'.*registered: v1"),
        session_factory.begin() as s,
    ):
        activate_model_version(session=s, version="nope")
    with session_factory() as s:
        assert get_active_model_version(session=s).version == "v1"
