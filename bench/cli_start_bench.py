"""Benchmark: how long the command line takes to start, against ``python -c pass`` in the same run.

Wall time of a fresh interpreter running each of:
  python -c pass                  the floor: the interpreter alone
  inboxcrm --version              click and the command line's frame, no command imported
  inboxcrm --help                 the same, plus the command list from the registered summaries
  inboxcrm deals list             a real command: config, SQLAlchemy, the deals use case, one query,
                                  on an empty SQLite database made by ``inboxcrm init`` first
RUNS rounds, each running every command once (so a busy machine slows all of them alike); prints
the median and fastest time of each and the median's ratio to ``python -c pass``.
Aim: --help and --version under 0.3 s.

    python bench/cli_start_bench.py [--runs 20] [--tree DIR]

--tree measures the inboxcrm package of another checkout (e.g. an older commit unpacked with
``git archive``) instead of this one.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Wall time of ``argv``, run from ``cwd`` (not the checkout: ``python -m`` puts the working
    directory first on the path, ahead of the tree being measured)."""
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.decode(errors='replace')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="rounds of every command (default 20)")
    parser.add_argument("--tree", type=Path, default=HERE, help="checkout whose inboxcrm to measure")
    args = parser.parse_args()

    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="inboxcrm-start-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(args.tree.resolve()), "HOME": tmp, "XDG_DATA_HOME": tmp,
               "INBOXCRM_CONFIG": str(Path(tmp) / "config.toml"),
               "INBOXCRM_DATABASE_URL": f"sqlite:///{Path(tmp) / 'crm.db'}"}
        env.pop("INBOXCRM_LOG_LEVEL", None)
        inboxcrm = [python, "-m", "inboxcrm"]
        timed([*inboxcrm, "init"], env, tmp)
        cases = {
            "python -c pass": [python, "-c", "pass"],
            "inboxcrm --version": [*inboxcrm, "--version"],
            "inboxcrm --help": [*inboxcrm, "--help"],
            "inboxcrm deals list": [*inboxcrm, "deals", "list"],
        }
        for argv in cases.values():  # warm the file cache and the bytecode before measuring
            timed(argv, env, tmp)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, argv in cases.items():
                times[name].append(timed(argv, env, tmp))

    baseline = statistics.median(times["python -c pass"])
    print(f"CLI start, {args.runs} runs each, tree {args.tree.resolve()}, {sys.version.split()[0]}")
    print(f"{'command':<22} {'median':>9} {'fastest':>9} {'x python -c pass':>17}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<22} {median * 1000:>7.0f}ms {min(samples) * 1000:>7.0f}ms {median / baseline:>16.1f}x")


if __name__ == "__main__":
    main()
