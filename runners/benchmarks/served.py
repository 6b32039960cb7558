"""`transformers serve` (transformers' OpenAI-compatible server, extra `serving`) on 127.0.0.1 with a
local model folder, started as a process of its own and stopped by PID: the real server the served-
teacher tests and the teacher benchmark (runners/benchmarks/real_teacher.py --served) talk to."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Self


class ServerMissing(RuntimeError):
    """transformers serve cannot start here (its extra is not installed)."""


class TransformersServe:
    def __init__(self, model: Path | str, log: Path, continuous_batching: bool = False, threads: int = 1):
        serve = (shutil.which("transformers", path=str(Path(sys.executable).parent))
                 or shutil.which("transformers"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.model, self.log = str(model), Path(log)
        batching = ["--continuous-batching"] if continuous_batching else []
        self.process = subprocess.Popen(
            [serve, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
             "--log-level", "info", *batching, self.model],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)}, start_new_session=True)

    def __enter__(self) -> Self:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                said = self.log.read_text()
                if "serving" in said and "pip install" in said:
                    raise ServerMissing("transformers serve needs its extra: pip install "
                                        "'transformers[serving]'")
                raise RuntimeError(f"transformers serve exited: {said[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError("transformers serve did not answer in 180 s")

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chat_requests(self) -> int:
        """Chat completions the server answered, from its own access log."""
        return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200', self.log.read_text()))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
