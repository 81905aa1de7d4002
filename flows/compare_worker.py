"""One (method, seed) run of a parallel `cropi compare --workers N`, in its own process.

    python -m flows.compare_worker <compare folder> <method> <seed>

Reads the comparison's config from `<folder>/config.json`, runs the curriculum (its artifacts, each with its
compute seconds in its manifest, go to the shared storage root) and writes its record atomically to
`<folder>/records/<method>-s<seed>.json`, which the parent collects. Exit code 2 with one line on a CropiError.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cropi_core.config import RunConfig
from cropi_core.errors import CropiError
from flows.compare import job_record


def main(argv: list[str]) -> int:
    folder, method, seed = Path(argv[0]), argv[1], int(argv[2])
    config = RunConfig.model_validate_json((folder / "config.json").read_text())
    try:
        rec = job_record(config, method, seed)
    except CropiError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = folder / "records" / f"{method}-s{seed}.json"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
