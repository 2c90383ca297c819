"""Factories for test data: images (good and broken), catalogues, model artifacts."""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

GENDERS = ["MEN", "WOMEN"]
PRODUCTS = ["Dresses", "Pants", "Shorts", "Tees_Tanks"]
BROKEN_KINDS = ("missing", "not_image", "truncated", "too_large", "bad_crc")
EXPECTED_REASON = {
    "missing": "missing_image",
    "not_image": "not_an_image",
    "truncated": "corrupt_image",
    "too_large": "too_large",
    "bad_crc": "corrupt_image",
}
# Odd but good images a catalogue holds; each must be tagged like a plain JPEG.
ODD_KINDS = ("gif", "animated_gif", "palette_trns")


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (48, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def png_bomb(width: int = 12_000, height: int = 12_000) -> bytes:
    """A valid PNG header claiming a huge image (the pixel data is never needed)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def odd_bytes(kind: str, seed: int = 0) -> bytes:
    """A good image of an odd kind: a GIF, an animated GIF, or a palette PNG whose tRNS
    chunk is longer than its palette (Pillow: "palette index out of range")."""
    rng = np.random.default_rng(seed)
    if kind in ("gif", "animated_gif"):
        n = 3 if kind == "animated_gif" else 1
        frames = [
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("P")
            for _ in range(n)
        ]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=n > 1, append_images=frames[1:], duration=100)
        return buf.getvalue()
    if kind == "palette_trns":
        ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 3, 0, 0, 0)
        rows = b"".join(b"\x00" + bytes(rng.integers(0, 2, 8, dtype=np.uint8)) for _ in range(8))
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", ihdr)
            + _chunk(b"PLTE", bytes([255, 0, 0, 0, 0, 255]))
            + _chunk(b"tRNS", bytes([255] * 280))
            + _chunk(b"IDAT", zlib.compress(rows))
            + _chunk(b"IEND", b"")
        )
    raise ValueError(kind)


def broken_bytes(kind: str, seed: int = 0) -> bytes | None:
    """Bytes for a broken image of ``kind``; None means "do not upload" (missing key)."""
    if kind == "missing":
        return None
    if kind == "not_image":
        return b"<html>this is not an image</html>"
    if kind == "truncated":
        data = jpeg_bytes(seed, (96, 96))
        return data[: len(data) // 2]
    if kind == "too_large":
        return png_bomb()
    if kind == "bad_crc":  # pixel data damaged in storage: its chunk fails its CRC
        buf = io.BytesIO()
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buf, "PNG")
        data = bytearray(buf.getvalue())
        idat = data.index(b"IDAT")
        data[idat + 6] ^= 0x01
        return bytes(data)
    raise ValueError(kind)


def make_s3_catalogue(
    s3_client,
    bucket: str,
    *,
    n: int,
    broken_every: int = 0,
    odd_every: int = 0,
    prefix: str = "images",
) -> tuple[list[dict], dict[str, str]]:
    """Upload ``n`` images (every ``broken_every``-th one broken and every ``odd_every``-th
    one a good image of an odd kind, each cycling through its kinds) and return
    (catalogue rows, {broken item_id: expected reason})."""
    rows, broken = [], {}
    for i in range(n):
        item_id = f"sku-{i:05d}"
        key = f"{prefix}/{item_id}.jpg"
        if broken_every and i % broken_every == broken_every - 1:
            kind = BROKEN_KINDS[(i // broken_every) % len(BROKEN_KINDS)]
            data = broken_bytes(kind, seed=i)
            broken[item_id] = EXPECTED_REASON[kind]
        elif odd_every and i % odd_every == odd_every - 1:
            data = odd_bytes(ODD_KINDS[(i // odd_every) % len(ODD_KINDS)], seed=i)
        else:
            data = jpeg_bytes(seed=i)
        if data is not None:
            s3_client.put_object(Bucket=bucket, Key=key, Body=data)
        title = f"{GENDERS[i % 2].lower()} {PRODUCTS[i % len(PRODUCTS)].lower()} number {i}"
        rows.append({"item_id": item_id, "image_uri": f"s3://{bucket}/{key}", "title": title})
    return rows, broken


def write_csv(path: Path, rows: Iterable[dict], columns: Iterable[str] | None = None) -> Path:
    rows = list(rows)
    columns = list(columns or rows[0].keys())
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_artifact(out: Path, *, image_size: int = 32, use_text: bool = True) -> Path:
    """An untrained model of the real architecture, saved as an artifact folder."""
    from tagger.artifacts import save_artifact
    from train.model import ModelConfig, build_model

    config = ModelConfig(image_size=image_size, use_text=use_text, backbone_weights=None)
    captions = [f"a {g.lower()} {p.lower()}" for g in GENDERS for p in PRODUCTS]
    model = build_model(config, gender_labels=GENDERS, product_labels=PRODUCTS, captions=captions)
    return save_artifact(model, out, config=config, gender_labels=GENDERS, product_labels=PRODUCTS)


def add_model_version(session, version: str, *, activate: bool = False):
    """Register a model version row (no artifact needed) with the test label lists."""
    from tagger.registry import register_model_version

    return register_model_version(
        session=session,
        version=version,
        artifact_uri=f"/models/{version}",
        gender_labels=["MEN", "WOMEN"],
        product_labels=["Dresses", "Pants"],
        image_size=32,
        uses_text=False,
        activate=activate,
    )


def scored_prediction(
    gender: str,
    product_type: str,
    *,
    product_score: float,
    margin: float | None,
    gender_score: float = 0.9,
):
    """A Prediction with every class of GENDERS and PRODUCTS scored, as a worker stores
    one: the product type at ``product_score``, the runner-up ``margin`` below it (None:
    a tag from before margins, stored without one), the others lower still."""
    from tagger.scoring import Prediction

    runner_up = product_score - (margin if margin is not None else 0.1)
    others = [p for p in PRODUCTS if p != product_type]
    product = {product_type: product_score, others[0]: round(runner_up, 6)}
    product |= {p: round(runner_up / (n + 2), 6) for n, p in enumerate(others[1:])}
    other = round(1 - gender_score, 6)
    scores = {"gender": {g: gender_score if g == gender else other for g in GENDERS}}
    scores["product"] = product
    return Prediction(gender, gender_score, product_type, product_score, scores, margin)


def add_review_thresholds(
    session, version: str, *, product_margin: float, gender_score: float
) -> None:
    """Every class of ``version`` gets these review thresholds (as registration stores
    the defaults): a product tag whose margin is below ``product_margin``, or a gender tag
    scoring below ``gender_score``, needs review."""
    from tagger.db import ModelVersion
    from tagger.thresholds import Defaults, store_thresholds

    store_thresholds(
        session=session,
        version=session.get(ModelVersion, version),
        fitted=None,
        defaults=Defaults(product_margin=product_margin, gender_score=gender_score),
    )


def make_job(
    session_factory, n: int = 6, *, batch_size: int = 3, active_version: str | None = None
) -> int:
    """Items i0..i{n-1} and an import job of them in batches of ``batch_size`` (with
    ``active_version`` registered and active first, if given); returns the job's id."""
    from tagger.db import Item
    from tagger.jobs import create_job
    from tagger.states import JobKind

    with session_factory.begin() as s:
        if active_version is not None:
            add_model_version(s, active_version, activate=True)
        s.add_all([Item(item_id=f"i{k}", image_uri=f"/x/{k}.jpg") for k in range(n)])
        s.flush()
        return create_job(
            session=s,
            kind=JobKind.IMPORT,
            source="t",
            item_ids=[f"i{k}" for k in range(n)],
            batch_size=batch_size,
        ).id


def ledger_rows(session_factory, job_id: int) -> dict[str, tuple]:
    """A job's ledger rows: item id -> (state, attempts, deaths, delivery in flight)."""
    import sqlalchemy as sa

    from tagger.db import JobItem

    with session_factory() as s:
        rows = s.execute(sa.select(JobItem).where(JobItem.job_id == job_id)).scalars()
        return {r.item_id: (r.state, r.attempts, r.deaths, r.started_at is not None) for r in rows}
