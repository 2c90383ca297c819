"""A module-level Celery app, for tools that load an app by name rather than through a
factory: Celery's own command line and Flower.

    celery -A tagger.app inspect ping
    celery -A tagger.app inspect active
    celery -A tagger.app flower          # if Flower is installed

Importing this module reads the settings from the environment (TAGGER_*), so it is the
one place that does so at import time: nothing in tagger imports it (tests/test_imports.py
checks). `tagger worker` and every other command build their own app with
``create_app``; this one is the same app, made the same way.
"""

from __future__ import annotations

from tagger.celery_app import create_app
from tagger.settings import load_settings

app = create_app(load_settings())
