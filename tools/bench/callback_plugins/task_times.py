"""Benchmark-only callback: when each task of a run started and how it ended, one JSON line per task
in the file NODE_RECOVERY_BENCH_TASK_TIMES names (epoch seconds), so a benchmark can split a run's
wall time into Ansible's start, the tasks that did something, the tasks that were skipped, and its end."""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("NODE_RECOVERY_BENCH_TASK_TIMES")
        self._tasks: list[dict] = []

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._tasks.append({"name": task.get_name(), "started": time.time(), "ran": False})

    def _ran(self, result, *_args, **_kwargs) -> None:
        if self._tasks:
            self._tasks[-1]["ran"] = True

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_unreachable = _ran

    def v2_playbook_on_stats(self, stats) -> None:
        if not self._path:
            return
        ended = time.time()
        with open(self._path, "w", encoding="utf-8") as out:
            for task in self._tasks:
                out.write(json.dumps(task) + "\n")
            out.write(json.dumps({"name": None, "started": ended, "ran": False}) + "\n")
