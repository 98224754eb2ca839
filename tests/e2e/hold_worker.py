"""`echo-worker` whose next inference can be held mid-task, so that a test can SIGKILL the pool
process right there (after the claim, before the report).

    python tests/e2e/hold_worker.py --queues gpu,io      (ECHO_TEST_HOLD_DIR names a folder)

A test asks for a hold by creating ``$ECHO_TEST_HOLD_DIR/hold``; the next study to be generated
takes it (deleting the file), writes its process id to ``held.pid`` and sleeps. Every other
inference runs normally. The patch is made before the pool forks, so every pool process has it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from worker import inference
from worker.cli import main

HOLD_DIR = Path(os.environ["ECHO_TEST_HOLD_DIR"])
_generate = inference.StudyInference._generate


def _held_generate(self, engine, instances, pick):
    try:
        (HOLD_DIR / "hold").unlink()
    except FileNotFoundError:
        return _generate(self, engine, instances, pick)
    (HOLD_DIR / "held.pid").write_text(str(os.getpid()))
    time.sleep(600)
    return _generate(self, engine, instances, pick)


inference.StudyInference._generate = _held_generate

if __name__ == "__main__":
    main()
