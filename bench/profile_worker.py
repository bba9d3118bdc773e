"""Profile a museflow worker draining a backlog with py-spy; print where its CPU goes.

    python bench/profile_worker.py [--bootstrap HOST:PORT] [--backlog 120000] [--seconds 15]

Needs ``py-spy`` (``pip install py-spy``; sampling another process may need ptrace rights).
Deploys the demo models under a fresh topic prefix, pre-loads the backlog, starts one
``museflow worker --roles router,scorer``, samples it at 200 Hz and prints the inclusive and
self shares of the hottest functions (raw stacks are kept next to the report).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import e2e

from museflow.config import Settings
from museflow.demo.models import train_demo_models
from museflow.demo.supervise import free_port


def _name(frame: str) -> str:
    frame = re.sub(r" \(/[^)]*/(site-packages/|main/)?", " (", frame)
    return re.sub(r":\d+\)$", ")", frame)


def summarize(raw: Path, top: int = 40) -> str:
    total, inclusive, self_ = 0, collections.Counter[str](), collections.Counter[str]()
    for line in raw.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        n = int(count)
        total += n
        frames = [_name(f) for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += n
        self_[frames[-1]] += n
    lines = [f"{total} samples", "-- inclusive"]
    lines += [f"{n / total:6.1%}  {k[:140]}" for k, n in inclusive.most_common(top)]
    lines += ["-- self"] + [f"{n / total:6.1%}  {k[:140]}" for k, n in self_.most_common(top // 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="broker (default: start one)")
    parser.add_argument("--backlog", type=int, default=120_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile-worker.txt"))
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="museflow-profile-"))
    with e2e.broker(args.bootstrap, work) as bootstrap:
        base = Settings(bootstrap_servers=bootstrap, metrics_enabled=False, metrics_port=free_port(),
                        new_group_start="earliest")
        specs = [m.spec_path for m in train_demo_models(work / "models", seed=7, n_events=30_000)]
        settings = e2e.scenario_settings(base, "prof", work)
        e2e.deploy(settings, specs)
        e2e.Load(20_000).preload(settings, args.backlog)
        (worker,) = e2e._workers(settings, work, 1)
        worker.start().wait_ready(120)
        time.sleep(3)  # past start-up, into the steady drain
        raw = args.out.with_suffix(".raw")
        raw.parent.mkdir(parents=True, exist_ok=True)
        assert worker.proc is not None
        try:
            subprocess.run(["py-spy", "record", "-p", str(worker.proc.pid), "-d", str(int(args.seconds)),
                            "-r", "200", "-f", "raw", "-o", str(raw), "--nonblocking"], check=True)
        finally:
            worker.stop()
    report = summarize(raw)
    args.out.write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
