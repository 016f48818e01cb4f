"""Opening an errand's document photo: what the access check, the integrity check and the view log
cost over reading the file.

    python -m bench.documents [--pg-url URL] [--rounds 7] [--opens 300] [--size 300000]

On a throwaway database (a SQLite file in a temporary directory, or with ``--pg-url`` a PostgreSQL
database that is dropped and recreated, migrated with the checked-in migrations, and dropped at
the end) it loads the demo, makes one transferred 低保申请 of 刘桂芳 with its four photos of
``--size`` bytes in a temporary document directory, assigned to the steward 何管家, then times,
in the same process and interleaved round by round:

* ``baseline``  read the photo file and hash it (SHA-256): the least any integrity-checked
                read costs;
* ``open``      ``models.errand_docs.open_photo``: the steward's roles and the errand read, the
                file read, hashed and compared, a ``DocumentView`` row written;
* ``link``      ``make_link`` + ``verify``: a signed link made for the steward and checked
                (itsdangerous, the key read from the database each time).

Each round runs ``--opens`` operations of each kind; the table gives the median over rounds of
the per-operation time and its ratio to the baseline. Every open is checked: the bytes are the
photo's, and the view log grew by exactly the number of opens.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.throwaway import throwaway_db
from bot.config import ErrandsConfig

NOW = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)


def jpeg(size: int, seed: int) -> bytes:
    """``size`` bytes that pass the type check (a JPEG's magic number, then filler)."""
    head = b"\xff\xd8\xff\xe0"
    body = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    return (head + body)[:size]


async def run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, float]]:
    from models import errand_docs
    from models.demo import load_demo
    from models.errand_core import ensure_catalogue
    from models.errands import DocumentView, Errand, ErrandPhoto, ErrandState, PhotoState, Progress
    from models.places import Department
    from models.residents import Resident

    async with throwaway_db(args.pg_url, workdir):
        errand_docs.configure(ErrandsConfig(documents_dir=str(workdir / "documents")))
        await load_demo(NOW)
        elder = await Resident.get(mobile="13904180032")
        steward = await Resident.get(mobile="13904180033")
        item = next(i for i in await ensure_catalogue(elder.community_id, NOW) if i.name == "低保申请")  # type: ignore[attr-defined]
        department = await Department.get(name="民政")
        errand = await Errand.create(
            community_id=elder.community_id, item_id=item.id, item_name=item.name,  # type: ignore[attr-defined]
            documents=item.documents, first_response_minutes=item.first_response_minutes,
            expected_days=item.expected_days, resident_id=elder.id, requested_by_id=elder.id,
            state=ErrandState.TRANSFERRED, progress=Progress.PROCESSING, steward_id=steward.id,
            department_id=department.id, created_at=NOW, first_response_at=NOW, complete_at=NOW,
            transferred_at=NOW)
        photos: list[tuple[int, bytes, Path]] = []
        for n, document in enumerate(item.documents):
            data = jpeg(args.size, n)
            digest = hashlib.sha256(data).hexdigest()
            photo = await ErrandPhoto.create(errand_id=errand.id, document=document, state=PhotoState.ACCEPTED,
                                             created_at=NOW, stored_at=NOW)
            name = f"{errand.id}/{photo.id}-{digest[:16]}.jpg"
            path = errand_docs.documents_dir() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            await ErrandPhoto.filter(id=photo.id).update(sha256=digest, size=len(data), content_type="image/jpeg",
                                                          file_name=name)
            photos.append((photo.id, data, path))

        async def baseline() -> None:
            for i in range(args.opens):
                _, data, path = photos[i % len(photos)]
                read = await asyncio.to_thread(path.read_bytes)
                assert hashlib.sha256(read).hexdigest() == hashlib.sha256(data).hexdigest()

        async def opens() -> None:
            for i in range(args.opens):
                photo_id, data, _ = photos[i % len(photos)]
                _, read = await errand_docs.open_photo(steward.id, photo_id, via="api", now=NOW)
                assert read == data

        async def links() -> None:
            for _ in range(args.opens):
                path = await errand_docs.make_link(steward.id, errand.id, NOW)
                assert await errand_docs.verify(path.rsplit("/", 1)[1], NOW) == (errand.id, steward.id)

        kinds = {"baseline": baseline, "open": opens, "link": links}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        views_before = await DocumentView.all().count()
        for _ in range(args.rounds):
            for kind, fn in kinds.items():
                started = time.perf_counter()
                await fn()
                times[kind].append((time.perf_counter() - started) / args.opens)
        views = await DocumentView.all().count() - views_before
        assert views == args.rounds * args.opens, f"{views} views logged for {args.rounds * args.opens} opens"
        return [(kind, statistics.median(values)) for kind, values in times.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg-url", default="", help="a throwaway PostgreSQL database (dropped and recreated)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--opens", type=int, default=300)
    parser.add_argument("--size", type=int, default=300_000, help="bytes per photo")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="linli-bench-docs-") as tmp:
        rows = asyncio.run(run(args, Path(tmp)))
    base = dict(rows)["baseline"]
    backend = "PostgreSQL" if args.pg_url else "SQLite"
    print(f"document opens on {backend}: {args.rounds} rounds × {args.opens}, photos of {args.size:,} bytes")
    print(f"{'kind':<10}{'median per op':>16}{'ops/s':>10}{'× baseline':>12}")
    for kind, seconds in rows:
        print(f"{kind:<10}{seconds * 1e3:>13.3f} ms{1 / seconds:>10,.0f}{seconds / base:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
