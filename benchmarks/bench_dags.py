"""DAG parse-time benchmark: how long each DAG file takes to import, against a minimal DAG file.

Airflow re-parses every DAG file every ``refresh_interval``, so a slow import costs the scheduler
all day. Each file is timed in a fresh, byte-compiled interpreter after ``import airflow.sdk``
(Airflow's own start-up is not ours to measure); the baseline is a one-task DAG file timed the same
way in the same run. Median of ``--rounds`` fresh interpreters per file. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.machine import machine

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = '''
from datetime import datetime
from airflow.sdk import DAG, task
with DAG(dag_id="minimal", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    @task
    def noop() -> None: ...
    noop()
'''
TIMER = """
import importlib.util, json, sys, time
import airflow.sdk
start = time.perf_counter()
spec = importlib.util.spec_from_file_location("dagfile", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(time.perf_counter() - start))
"""


def import_seconds(path: Path, env: dict[str, str], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", TIMER, str(path)], env=env, capture_output=True, text=True,
                             timeout=300, check=True)
        times.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "plugins"), str(ROOT / "jobs" / "ctloop"),
                    str(ROOT / "dags")], check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-dags-") as tmp:
        home = Path(tmp)
        env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
               "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
               "CTLOOP_PIPELINES_DIR": str(ROOT / "pipelines"), "PYTHONPATH": str(ROOT / "plugins")}
        minimal = home / "minimal.py"
        minimal.write_text(MINIMAL)
        baseline = import_seconds(minimal, env, args.rounds)
        files = {}
        for path in sorted((ROOT / "dags").glob("*.py")):
            files[path.name] = round(import_seconds(path, env, args.rounds), 4)
            print(f"[bench-dags] {path.name}: {files[path.name]:.3f}s", file=sys.stderr, flush=True)
    slowest = max(files.values())
    print(json.dumps({
        "bench": "dags", "rounds": args.rounds, "import_seconds": files, "max_seconds": slowest,
        "baseline": "a one-task DAG file, same interpreter set-up", "baseline_seconds": round(baseline, 4),
        "ratio_to_baseline": round(slowest / baseline, 2) if baseline else None, "goal_max_seconds": 0.5,
        "machine": machine(),
    }))


if __name__ == "__main__":
    main()
