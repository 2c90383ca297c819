"""`tagger web`: the review page, on the same database as the rest of tagger.

``queries`` holds the SQL (SQLAlchemy only, timed on its own by benchmarks), ``params``
turns a request's filter values into checked :class:`queries.Filters`, ``auth`` the users,
sessions and CSRF tokens, ``images`` where an item's image is served from, and ``app`` the
FastAPI application built by ``create_app(settings)`` (server-rendered Jinja2 templates,
no JavaScript needed).
"""
