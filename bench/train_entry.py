"""`train.py` for the benchmark: the very same `competition.train.main`, plus a timer around the image-cache build.

The run's own `metrics.jsonl` gives each epoch's time (training loop only); the cache build happens before
the first epoch and is recorded nowhere, so this wrapper writes its duration (and the process's start-up
time up to it), and those of validation and state saving, as JSON lines to $BENCH_TIMINGS. Nothing else
differs from `accelerate launch train.py …`.
"""

from __future__ import annotations

import json
import os
import time

STARTED = time.perf_counter()

import competition.train as train_module  # noqa: E402

_build_image_cache = train_module.build_image_cache


def _record(event: dict) -> None:
    path = os.environ.get("BENCH_TIMINGS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event | {"rank": int(os.environ.get("RANK", "0"))}) + "\n")


def _timed_build_image_cache(*args, **kwargs):
    began = time.perf_counter()
    images = _build_image_cache(*args, **kwargs)
    now = time.perf_counter()
    _record({"event": "image_cache", "seconds": now - began, "since_start": began - STARTED, "images": len(images)})
    return images


train_module.build_image_cache = _timed_build_image_cache


def _timed(name: str, function):
    def timed(*args, **kwargs):
        began = time.perf_counter()
        out = function(*args, **kwargs)
        _record({"event": name, "seconds": time.perf_counter() - began, "since_start": began - STARTED})
        return out

    return timed


# Outside the epochs' images_per_s window, but part of a run's wall time: validation and state saving.
train_module.evaluate = _timed("evaluate", train_module.evaluate)
train_module.save_state_atomically = _timed("save_state", train_module.save_state_atomically)

if __name__ == "__main__":
    code = train_module.main()
    _record({"event": "exit", "since_start": time.perf_counter() - STARTED, "code": code})
    raise SystemExit(code)
