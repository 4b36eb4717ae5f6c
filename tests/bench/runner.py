"""Runs every tests/bench/bench_*.py and writes one Markdown table (var/bench/report.md).

A bench module exposes `run() -> list[Row]`: each row is one figure of Fleet beside the same
figure of a baseline measured in the same run (and the theoretical floor where there is one).
Benchmarks run against a throw-away test database (DATABASE_URL picks the engine, as in tests).
"""

from __future__ import annotations

import gc
import importlib
import os
import pkgutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Row:
    scenario: str
    metric: str
    fleet: float
    baseline: float
    floor: float | None = None
    unit: str = ""

    @property
    def ratio(self) -> str:
        return f"{self.baseline / self.fleet:.1f}x" if self.fleet else "—"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | metric | Fleet | baseline | baseline ÷ Fleet | floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.metric} | {fmt(r.fleet, r.unit)} | {fmt(r.baseline, r.unit)} "
            f"| {r.ratio} | {fmt(r.floor, r.unit)} |"
        )
    return "\n".join(lines)


def main(selected: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    # As in the tests: pages render without `collectstatic`'s manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    setup_test_environment()
    databases = setup_databases(verbosity=0, interactive=False)
    # As Fleet's processes do at start-up (fleet/apps.py), and after building the database, which
    # a worker does not: what is loaded now stays out of the collector's full collections, so a
    # figure is not one ~100 ms collection of the harness's own objects, Fleet's or a baseline's.
    gc.freeze()
    import tests.bench as package

    rows: list[Row] = []
    try:
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("bench_"):
                continue
            if selected and info.name not in selected:
                continue
            module = importlib.import_module(f"tests.bench.{info.name}")
            started = time.perf_counter()
            print(f"== {info.name}", flush=True)
            module_rows = module.run()
            rows.extend(module_rows)
            print(table(module_rows), flush=True)
            print(f"   done in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        teardown_databases(databases, verbosity=0)

    from django.db import connection

    report = (
        f"# Fleet benchmarks\n\nDatabase: {connection.vendor}. "
        "Ratios are the baseline's figure divided by Fleet's (higher is better for Fleet).\n\n"
        + table(rows)
        + "\n"
    )
    out = ROOT / "var" / "bench" / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print()
    print(report)
    print(f"Written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
