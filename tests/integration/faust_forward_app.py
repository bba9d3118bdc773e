"""A minimal Faust agent built by museflow's app factory: forwards SRC to DST unchanged.

Run as ``python faust_forward_app.py SRC DST`` with MUSEFLOW_* settings in the environment.
"""

from __future__ import annotations

import sys

from museflow.agents.app import create_app, run_worker
from museflow.config import Settings

source_name, target_name = sys.argv[1], sys.argv[2]
sys.argv = [sys.argv[0]]
app = create_app(Settings.from_env())
source = app.topic(source_name)
target = app.topic(target_name)


@app.agent(source)
async def forward(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        await target.send(key=event.key, value=event.value)


if __name__ == "__main__":
    run_worker(app)
