"""Decode memory benchmark: peak RSS of one batch of maximum-size images, budget vs none.

    .venv/bin/python benchmarks/decode_memory.py [--images 64] [--side 6300] [--workers 4]

Makes a few legal images just under the default pixel limit (40 MP: 6300x6300), which
compress well but must still be fully decoded: RGB, RGBA, palette-with-transparency and
16-bit greyscale PNGs plus a JPEG. A batch of ``--images`` of them (cycling through the
kinds) goes through ``tagger.images.decode_many`` with the pipeline's settings (size 224,
``--workers`` threads), once per pixel budget, each run in a fresh subprocess so that one
run's heap does not pollute the next one's figure (the images are made in a subprocess
too: Linux carries ``ru_maxrss`` over fork and exec, so a parent that had grown would set
every child's floor). Peak RSS is the kernel's high-water mark, VmHWM (``ru_maxrss``
where /proc is missing); "decode" is the peak minus the high-water mark the process
already had with all the compressed bytes loaded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from PIL import Image

MAX_PIXELS = 40_000_000
SIZE = 224
KINDS = ("png-rgb", "png-rgba", "png-palette-trns", "png-grey16", "jpeg")


def make_image(kind: str, side: int) -> bytes:
    """One side x side image of ``kind``: smooth gradients with some structure."""
    y, x = np.mgrid[0:side, 0:side]
    r = (x * 255 // side).astype(np.uint8)
    g = (y * 255 // side).astype(np.uint8)
    b = (((x // 64 + y // 64) % 2) * 255).astype(np.uint8)
    buf = io.BytesIO()
    if kind == "png-rgb":
        Image.fromarray(np.dstack([r, g, b])).save(buf, "PNG", compress_level=6)
    elif kind == "png-rgba":
        a = ((x + y) * 255 // (2 * side)).astype(np.uint8)
        Image.fromarray(np.dstack([r, g, b, a])).save(buf, "PNG", compress_level=6)
    elif kind == "png-palette-trns":
        img = Image.fromarray((r // 16 * 16 + g // 16).astype(np.uint8), "L").convert("P")
        img.putpalette([c for i in range(256) for c in (i, 255 - i, (i * 7) % 256)])
        img.save(buf, "PNG", transparency=0, compress_level=6)
    elif kind == "png-grey16":
        grey = ((x + y) * 65535 // (2 * side)).astype(np.uint16)
        Image.fromarray(grey).save(buf, "PNG", compress_level=6)
    elif kind == "jpeg":
        Image.fromarray(np.dstack([r, g, b])).save(buf, "JPEG", quality=90)
    else:
        raise ValueError(kind)
    return buf.getvalue()


def peak_rss_mb() -> float:
    """The process's peak resident set so far, in MB."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(folder: Path, images: int, workers: int, budget: int | None) -> dict:
    """Runs in the child: load the batch, decode it, report RSS and time."""
    from tagger.images import decode_many

    files = {kind: (folder / f"{kind}.bin").read_bytes() for kind in KINDS}
    blobs = {f"item{i}": files[KINDS[i % len(KINDS)]] for i in range(images)}
    before = peak_rss_mb()
    start = time.perf_counter()
    out = decode_many(blobs, size=SIZE, max_pixels=MAX_PIXELS, workers=workers, pixel_budget=budget)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    failed = {k: str(v) for k, v in out.items() if not isinstance(v, np.ndarray)}
    return {"before_mb": before, "peak_mb": peak, "s": seconds, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--side", type=int, default=6300, help="square side (6300: 39.7 MP)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--folder", type=Path, help="where the test images are (re)used")
    parser.add_argument("--child", type=str, help=argparse.SUPPRESS)
    parser.add_argument("--make", type=str, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.make is not None:  # make one test image, in a throwaway process
        (args.folder / f"{args.make}.bin").write_bytes(make_image(args.make, args.side))
        return

    if args.child is not None:  # one measurement, in a fresh process
        budget = None if args.child == "default" else int(args.child)
        print(json.dumps(measure(args.folder, args.images, args.workers, budget)))
        return

    folder = args.folder or Path(tempfile.gettempdir()) / f"tagger-decode-memory-{args.side}"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        path = folder / f"{kind}.bin"
        if not path.exists():
            cmd = [sys.executable, __file__, "--make", kind, "--side", str(args.side)]
            subprocess.run([*cmd, "--folder", str(folder)], check=True)
        print(f"{kind:18} {args.side}x{args.side}  {path.stat().st_size / 1e6:6.2f} MB")

    # The last two rows put back Pillow's default 16 MiB image blocks, which tagger.images
    # raises so that freed images go back to the system (see PILLOW_BLOCK_SIZE there).
    pillow_default = {"PILLOW_BLOCK_SIZE": "16m"}
    runs = [
        ("no budget", str(10**15), {}),
        ("default (2 x max_pixels)", "default", {}),
        ("1 x max_pixels", str(MAX_PIXELS), {}),
        ("no budget, 16 MiB blocks", str(10**15), pillow_default),
        ("default, 16 MiB blocks", "default", pillow_default),
    ]
    print(f"\n{args.images} images, size {SIZE}, workers {args.workers}")
    print(f"{'pixel budget':26} {'baseline MB':>12} {'peak MB':>9} {'decode MB':>10} {'s':>6}")
    for label, child, env in runs:
        cmd = [sys.executable, __file__, "--child", child, "--folder", str(folder)]
        cmd += ["--images", str(args.images), "--workers", str(args.workers)]
        done = subprocess.run(
            cmd, check=True, capture_output=True, text=True, env={**os.environ, **env}
        )
        r = json.loads(done.stdout)
        print(
            f"{label:26} {r['before_mb']:12.0f} {r['peak_mb']:9.0f} "
            f"{r['peak_mb'] - r['before_mb']:10.0f} {r['s']:6.1f}"
            + (f"  failed: {r['failed']}" if r["failed"] else "")
        )


if __name__ == "__main__":
    main()
