"""The worker's path never imports torch: load an exported model and generate in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from echo.runtime import Engine

    engine = Engine.load(sys.argv[1])
    report = engine.generate(np.random.default_rng(0).random((200, 180)).astype(np.float32))
    heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers", "onnx"))
    print(json.dumps({"heavy": heavy, "tokens": report.tokens, "start": engine.start_seconds}))
    """
)


def test_engine_runs_without_importing_torch(tiny) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tiny.export)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["tokens"] == 24
    assert result["start"] > 0
