"""Replays an earlier run: answers come from its generation records (`generations.jsonl` in the run
directory), matched on the request's messages, sampling parameters and sample index. A request the
recording lacks is an error, never a silent new answer."""

import json
from pathlib import Path

from bench.errors import BenchError
from bench.teachers.backend import LocalBackend, Response
from bench.teachers.cache import cache_key


def replay_key(identity: dict) -> str:
    """The identity without backend, endpoint and model: a replay answers for whichever was recorded."""
    return cache_key({k: v for k, v in identity.items() if k not in ("backend", "model", "endpoint")})


class ReplayBackend(LocalBackend):
    name = "replay"

    def __init__(self, records: str | list):
        paths = [records] if isinstance(records, str) else list(records)
        self._answers = {}
        models = set()
        for path in map(Path, paths):
            if not path.is_file():
                raise BenchError(f"teacher=replay: no generation records at {path}; "
                                 "set teacher.backend.records to an earlier run's generations.jsonl")
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise BenchError(f"teacher=replay: cannot read {path} as UTF-8 JSON lines ({error}); point "
                                 "teacher.backend.records at a run's generations.jsonl") from None
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    record = json.loads(line)
                    self._answers[replay_key(record["identity"])] = record["response"]
                    models.add(f"{record['identity']['backend']}:{record['identity']['model']}")
                except (ValueError, KeyError, TypeError) as error:
                    raise BenchError(
                        f"teacher=replay: {path}:{number} is not a generation record ({error!r}); "
                        "point teacher.backend.records at a run's generations.jsonl"
                    ) from None
        self.model = "+".join(sorted(models))
        self._paths = paths

    def complete_batch(self, requests: list) -> list:
        responses = []
        for request in requests:
            key = replay_key(request.identity("", ""))
            if key not in self._answers:
                prompt = request.messages[-1]["content"][:60].replace("\n", " ")
                raise BenchError(
                    f"teacher=replay: the recording {', '.join(self._paths)} has no answer for a "
                    f"{request.kind} request (sample {request.sample_index}, prompt '{prompt}...'); "
                    "replay the same config, or use the original teacher"
                )
            responses.append(as_response(self._answers[key]))
        return responses


def as_response(answer) -> Response:
    """A recorded answer; one of the wrong shape (or with a null text) still becomes a Response, which the
    Teacher counts as a failure of its kind (malformed, null content) instead of crashing on it."""
    try:
        return Response(**answer)
    except TypeError:
        return Response(text=answer)
