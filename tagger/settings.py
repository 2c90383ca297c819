"""One settings object, read from the environment (``TAGGER_*``) and validated up front.

Entry points (CLI commands, the Celery app, the embedded runner) call ``Settings()``;
nothing reads the environment at import time. AWS credentials are deliberately *not*
fields here: boto3 reads the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` / ``AWS_PROFILE`` variables itself, so secrets never pass through
(or get printed by) this object.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Between the hard time limit plus back-off and the visibility timeout: the time a worker
# needs to notice the kill and requeue the batch before Redis would hand it out again.
TIME_LIMIT_MARGIN = 30
MIN_TIME_LIMIT = 10
ROOT_PATH = re.compile(r"(/[A-Za-z0-9_~+-][A-Za-z0-9._~+-]*)+")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGGER_", extra="ignore")

    # --- where things live -------------------------------------------------------
    database_url: str = Field(
        "sqlite:///tagger.db",
        description="SQLAlchemy URL. Postgres in production "
        "(postgresql+psycopg2://user@host/db); SQLite for the embedded mode.",
    )
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (Redis).")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto); unset for AWS S3."
    )
    s3_region: str = Field("us-east-1", description="Region for the S3 client.")
    model_cache_dir: Path = Field(
        Path(".tagger-cache/models"),
        description="Where model artifacts stored on S3 are downloaded before loading.",
    )

    # --- batching and fetching ---------------------------------------------------
    batch_size: int = Field(
        64, ge=1, le=4096, description="Items per queued task (one model call)."
    )
    fetch_concurrency: int = Field(16, ge=1, le=256, description="Threads fetching images.")
    s3_connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to S3.")
    s3_read_timeout: float = Field(30.0, gt=0, description="Seconds to wait for S3 data.")
    s3_max_attempts: int = Field(5, ge=1, le=20, description="boto3 'standard' retry attempts.")

    # --- image limits (decompression bombs, huge files) --------------------------
    max_image_bytes: int = Field(25_000_000, ge=1, description="Larger objects are too_large.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Larger images are too_large.")

    # --- workers -------------------------------------------------------------------
    worker_concurrency: int = Field(
        0,
        ge=0,
        description="Pool processes per `tagger worker`. 0: automatic, 1 on TensorFlow (one "
        "worker per GPU) and 2 on OpenVINO (one batch's fetch and decode overlap the other's "
        "model call).",
    )
    visibility_timeout: int = Field(
        270,
        ge=60,
        description="Seconds before Redis re-delivers an unacked batch: how soon a batch "
        "lost with its worker comes back. Must exceed the hard time limit plus the back-off.",
    )
    batch_time_limit: int | None = Field(
        None,
        ge=10,
        description="Hard time limit of one batch, seconds (the process running it is "
        "killed). Default: the visibility timeout less the retry back-off and a 30 s margin.",
    )
    task_max_retries: int = Field(5, ge=0, description="Retries for transient errors.")
    retry_backoff_max: int = Field(60, ge=1, description="Cap on retry back-off, seconds.")
    max_batch_deaths: int = Field(
        3,
        ge=1,
        le=100,
        description="Deliveries of a batch that died (worker killed, time limit) before it is "
        "split in halves to isolate the item that kills it (failed as worker_crash).",
    )
    redis_socket_timeout: float = Field(
        5.0,
        gt=1,
        description="Seconds a Redis command may wait before the link counts as dead (each "
        "dead pooled connection stalls the worker this long once). Above kombu's 1 s BRPOP.",
    )
    redis_health_check_interval: int = Field(
        10,
        ge=1,
        description="Seconds between checks of the worker's Redis connections; a silently "
        "dropped link is noticed within about twice this.",
    )
    queue: str = Field("tagger", min_length=1, description="Celery queue name.")
    runtime: Literal["auto", "keras", "openvino"] = Field(
        "auto",
        description="Inference runtime of a worker: keras (TensorFlow), openvino (CPU; the "
        "Keras artifact converted and checked against Keras first), or auto: TensorFlow "
        "where an NVIDIA GPU is visible, OpenVINO otherwise.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="OpenVINO inference precision: auto is bf16 where the CPU has native "
        "bf16 instructions (AVX512_BF16 or AMX), fp32 otherwise.",
    )
    inference_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="Threads one model call may use (0: one per core of the machine).",
    )
    decode_threads: int = Field(
        0, ge=0, le=256, description="Threads decoding one batch's images (0: one per core)."
    )
    metrics_port: int = Field(
        9808,
        ge=0,
        le=65535,
        description="Port of a worker's Prometheus metrics endpoint (0: no endpoint).",
    )
    tf_memory_growth: bool = Field(True, description="Grow GPU memory as needed.")
    mixed_precision: bool = Field(False, description="Run inference in mixed_float16 on GPUs.")

    # --- nightly re-tagging ----------------------------------------------------------
    retag_cron: str = Field(
        "0 2 * * *", description="When beat runs the re-tag sweep (cron, UTC: m h dom mon dow)."
    )
    retag_limit: int = Field(100_000, ge=1, description="Most items one sweep queues.")
    retry_failed_after: int = Field(
        3600, ge=1, description="Back-off before a failed item is retried; doubles per attempt."
    )
    max_failure_attempts: int = Field(
        5, ge=1, description="Failed items are retried by sweeps until this many attempts."
    )
    stall_after: int = Field(
        7200, ge=60, description="A job with no progress for this long is shown as stalled."
    )
    ledger_retention_days: int = Field(
        14,
        ge=0,
        le=36500,
        description="Days a finished job keeps its per-item ledger (job_items rows) before "
        "the nightly prune, run after the sweep, deletes it; the job's counters and the "
        "failures stay. 0: keep forever.",
    )

    # --- review: thresholds and the web page -----------------------------------------
    review_product_margin: float = Field(
        0.2,
        ge=0,
        le=1,
        description="A product tag whose margin over the second-best type is below this "
        "needs review, for classes the model's artifact gives no threshold.",
    )
    review_gender_score: float = Field(
        0.75,
        ge=0,
        le=1,
        description="A gender tag scoring below this needs review, for classes the model's "
        "artifact gives no threshold.",
    )
    web_host: str = Field("127.0.0.1", description="Address `tagger web` listens on.")
    web_port: int = Field(8000, ge=1, le=65535, description="Port `tagger web` listens on.")
    web_users_file: Path | None = Field(
        None,
        description="Users who may correct tags: a file of `name:pbkdf2_sha256$...` lines "
        "(`tagger web add-user` writes them). Without it (and without an auth header) the "
        "page is read-only.",
    )
    web_auth_header: str | None = Field(
        None,
        description="Trust this request header (e.g. X-Forwarded-User) as the user's name: "
        "only behind a proxy that sets it and strips it from clients' requests.",
    )
    web_secret: SecretStr | None = Field(
        None,
        description="Key signing the page's session cookies and CSRF tokens; set the same "
        "one on every `tagger web` process. Unset: a random key per process (logins end "
        "when it restarts).",
    )
    presign_seconds: int = Field(
        300, ge=10, le=86_400, description="Lifetime of the page's presigned image URLs."
    )
    web_secure_cookie: bool = Field(
        False,
        description="Set it when the page is served over HTTPS, directly or behind a proxy: "
        "the session cookie then carries the Secure flag (browsers send it over HTTPS only).",
    )
    web_login_attempts: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Failed logins for one user name, or from one client address, within "
        "TAGGER_WEB_LOGIN_WINDOW_SECONDS before further logins for it are refused (HTTP 429) "
        "until the window ends. Counted in Redis (TAGGER_BROKER_URL), so shared by every "
        "`tagger web` process; logins are refused (503) while Redis cannot be reached.",
    )
    web_login_window_seconds: int = Field(
        900,
        ge=1,
        le=86_400,
        description="The fixed window of TAGGER_WEB_LOGIN_ATTEMPTS, seconds from the first "
        "failure counted in it.",
    )
    web_root_path: str = Field(
        "",
        description="Path prefix the page is served under behind a proxy, e.g. /tagger for "
        "https://host/tagger/: every link, form and redirect starts with it. The proxy may "
        "pass requests on with the prefix or without it. Empty: served at /.",
    )

    log_level: str = Field("INFO", description="Python logging level.")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, v: str) -> str:
        if not v.startswith(("postgresql", "sqlite")):
            raise ValueError(
                "TAGGER_DATABASE_URL must be a postgresql or sqlite URL, "
                f"got {mask_url_password(v)!r}"
            )
        if v.startswith("postgresql://"):
            # A bare postgresql:// makes SQLAlchemy pick its default driver (psycopg 3),
            # which is not installed; psycopg2 is tagger's.
            v = "postgresql+psycopg2://" + v.removeprefix("postgresql://")
        return v

    @field_validator("broker_url")
    @classmethod
    def _redis_broker(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://")):
            raise ValueError("TAGGER_BROKER_URL must be a redis:// or rediss:// URL")
        return v

    @field_validator("web_root_path")
    @classmethod
    def _root_path(cls, v: str) -> str:
        # Segments of plain characters only: no empty one (// would make every link point
        # at another host), no . or .., nothing a URL would have to escape.
        if v and not ROOT_PATH.fullmatch(v):
            raise ValueError(
                "TAGGER_WEB_ROOT_PATH must be empty or a path such as /tagger: starting with "
                "/, not ending with one, of letters, digits and _ ~ + - . (no segment "
                f"empty or starting with .), got {v!r}"
            )
        return v

    @field_validator("retag_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from tagger.schedule import parse_cron

        parse_cron(v)  # raises ValueError with what is wrong
        return v

    @model_validator(mode="after")
    def _stall_after_visibility(self) -> Settings:
        # A job is "stalled" only once Redis would have re-delivered its lost batches.
        if self.stall_after <= self.visibility_timeout:
            raise ValueError(
                f"TAGGER_STALL_AFTER ({self.stall_after}) must exceed "
                f"TAGGER_VISIBILITY_TIMEOUT ({self.visibility_timeout})"
            )
        return self

    @model_validator(mode="after")
    def _limits_fit_visibility(self) -> Settings:
        # A worker holds a retried batch (unacked) through its back-off and then runs it
        # for up to the hard limit; if Redis re-delivers it before that, two workers run
        # the same batch at once. So back-off + hard limit must stay under the timeout.
        v, b = self.visibility_timeout, self.retry_backoff_max
        if b >= v:
            raise ValueError(
                f"TAGGER_RETRY_BACKOFF_MAX ({b}) must be less than "
                f"TAGGER_VISIBILITY_TIMEOUT ({v}): a retried batch would be delivered twice"
            )
        if self.batch_time_limit is None:
            if v - b - TIME_LIMIT_MARGIN < MIN_TIME_LIMIT:
                raise ValueError(
                    f"TAGGER_VISIBILITY_TIMEOUT ({v}) leaves no time for a batch after "
                    f"TAGGER_RETRY_BACKOFF_MAX ({b}): it must exceed the back-off by at least "
                    f"{TIME_LIMIT_MARGIN + MIN_TIME_LIMIT} s"
                )
        elif self.batch_time_limit + b >= v:
            raise ValueError(
                f"TAGGER_BATCH_TIME_LIMIT ({self.batch_time_limit}) plus "
                f"TAGGER_RETRY_BACKOFF_MAX ({b}) must be less than "
                f"TAGGER_VISIBILITY_TIMEOUT ({v}): a slow batch would be delivered twice"
            )
        return self

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"TAGGER_LOG_LEVEL must be a logging level, got {v!r}")
        return v

    @property
    def hard_time_limit(self) -> int:
        """Seconds after which the process running a batch is killed."""
        if self.batch_time_limit is not None:
            return self.batch_time_limit
        return self.visibility_timeout - self.retry_backoff_max - TIME_LIMIT_MARGIN

    @property
    def soft_time_limit(self) -> int:
        """Seconds after which a batch is interrupted (and re-queued as one that died)."""
        hard = self.hard_time_limit
        return max(hard - max(5, hard // 6), hard // 2)

    @property
    def decode_workers(self) -> int:
        """Threads decoding one batch: the setting, or one per core this process may use."""
        return self.decode_threads or available_cores()

    @property
    def s3_max_pool_connections(self) -> int:
        # boto3's pool must hold one connection per fetch thread, or threads queue for
        # sockets ("Connection pool is full" warnings and lost concurrency).
        return max(10, self.fetch_concurrency)

    def redacted(self) -> dict[str, object]:
        """Settings safe to log: passwords in URLs are masked."""
        from sqlalchemy.engine import make_url

        out: dict[str, object] = self.model_dump()
        out["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        out["broker_url"] = mask_url_password(self.broker_url)
        return out


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    import os

    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def mask_url_password(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``: safe to log or print."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def load_settings() -> Settings:
    """Settings from the environment, or a ConfigError naming each bad variable."""
    from pydantic import ValidationError

    from tagger.exceptions import ConfigError

    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "TAGGER_" + "_".join(str(p) for p in err["loc"]).upper()
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{name}: {message}" if err["loc"] else message)
        raise ConfigError("bad configuration: " + "; ".join(problems)) from None
