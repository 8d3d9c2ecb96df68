"""A real MLServer (KServe V2 inference protocol) in a subprocess on free ports, serving a scikit-learn
model fitted here (its own sklearn runtime) and the lab runtime of mlserver_lab.py."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import orjson

from tests.support.managed import Managed
from tests.support.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
MLSERVER = Path(sys.executable).with_name("mlserver")
IRIS_VERSION = "iris-1"
LAB_VERSION = "lab-1"


def write_repository(root: Path) -> None:
    """A model repository: `iris` (logistic regression on the iris data set, which scikit-learn ships)
    and `lab`."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    (root / "iris").mkdir()
    joblib.dump(LogisticRegression(max_iter=1000).fit(features, labels), root / "iris" / "model.joblib")
    _write_json(
        root / "iris" / "model-settings.json",
        {
            "name": "iris",
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": IRIS_VERSION},
        },
    )
    (root / "lab").mkdir()
    _write_json(
        root / "lab" / "model-settings.json",
        {
            "name": "lab",
            "implementation": "tests.support.mlserver_lab.LabRuntime",
            "parameters": {"version": LAB_VERSION},
        },
    )


class MLServer(Managed):
    """`mlserver start` on a model repository; ready when both models are. `kill()` and `start()`
    again keep the ports, so a predcache in front of it finds it back."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="mlserver-")
        self.root = Path(self._dir.name) / "models"
        self.root.mkdir()
        write_repository(self.root)
        self.port = free_port()
        self.metrics_port = free_port()
        _write_json(
            self.root / "settings.json",
            {
                "host": "127.0.0.1",
                "http_port": self.port,
                "grpc_port": free_port(),
                "metrics_port": self.metrics_port,
                "metrics_dir": str(Path(self._dir.name) / "metrics"),
                # In process: one Python to start, and the lab runtime's state is the server's.
                "parallel_workers": 0,
                "debug": False,
            },
        )
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> MLServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [str(MLSERVER), "start", str(self.root)],
            cwd=self._dir.name,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while not all(self._ready(model) for model in ("iris", "lab")):
            if self.process.poll() is not None:
                raise RuntimeError(f"mlserver exited: {self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlserver not ready in {timeout_s} s: {self.output()[-3000:]}")
            time.sleep(0.1)
        return self

    def _ready(self, model: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/models/{model}/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._log.close()
        self._dir.cleanup()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def inferences(self, model: str) -> int:
        """Inference requests MLServer counted for `model` (succeeded or failed), from its own metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            for metric in ("model_infer_request_success_total", "model_infer_request_failure_total"):
                if line.startswith(metric + "{") and f'model="{model}"' in line:
                    total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def lab(self, **behaviour: object) -> None:
        """Set how /lab/predict answers from now on (see LabRuntime), and zero its call counts."""
        request = urllib.request.Request(
            f"{self.url}/lab/behaviour",
            data=orjson.dumps(behaviour),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=2):
            pass

    def lab_calls(self) -> dict[str, int]:
        """Calls to /lab/predict since the last `lab(...)`, per canonical body."""
        with urllib.request.urlopen(f"{self.url}/lab/calls", timeout=2) as response:
            calls: dict[str, int] = orjson.loads(response.read())
            return calls


def _write_json(path: Path, value: object) -> None:
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2))
