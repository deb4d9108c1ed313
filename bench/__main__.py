"""Run every benchmark module (``bench/bench_*.py``) in name order; ``python -m bench NAME``
runs only modules whose name contains NAME."""
import importlib
import pkgutil
import sys
from pathlib import Path

import bench


def main(argv) -> int:
    wanted = argv[1:] 
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(bench.__file__).parent)])
                   if m.name.startswith("bench_"))
    for name in names:
        if wanted and not any(w in name for w in wanted):
            continue
        print(f"\n=== {name} ===", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
