"""A local server implementing OpenAI's Batch API, for the tests of the batch path (bench/teachers/batch.py):
files (upload, content), batches (create with metadata, retrieve, list, cancel) with the documented
statuses — validating, in_progress, finalizing, completed; failed, expired, cancelling, cancelled — an
output file of the answered requests and an error file of per-line errors. A batch moves one status a
poll; `hold()` keeps new batches in_progress until released (a client killed meanwhile finds the same
batch on its rerun).

    with LocalBatchServer(outcome="completed", line_faults={3: "500"}) as server: ...

`outcome`: what a batch ends as — completed (every line answered but the faulted ones), expired (the
first `partial` lines answered, the rest in the error file as batch_expired), failed (validation errors,
nothing answered). `billed` lists the custom_ids answered: what a provider would charge for."""

import itertools
import json
import time

from aiohttp import web

from runners.benchmarks.local_server import LocalChatServer

STEPS = ("validating", "in_progress", "finalizing")  # then the batch's outcome


class LocalBatchServer(LocalChatServer):
    def __init__(self, outcome: str = "completed", partial: int = 0, line_faults: dict | None = None,
                 max_file_bytes: int = 200 << 20, batch_api: bool = True, **chat):
        super().__init__(**chat)
        self.outcome, self.partial, self.line_faults = outcome, partial, dict(line_faults or {})
        self.max_file_bytes, self.batch_api = max_file_bytes, batch_api
        self.files: dict = {}
        self.batches: dict = {}
        self.billed: list = []  # custom_ids answered in batches
        self.holding = False
        self._ids = itertools.count(1)

    def routes(self, app: web.Application) -> None:
        super().routes(app)
        if self.batch_api:
            app.router.add_post("/v1/files", self._upload)
            app.router.add_get("/v1/files/{id}/content", self._content)
            app.router.add_post("/v1/batches", self._create)
            app.router.add_get("/v1/batches", self._list)
            app.router.add_get("/v1/batches/{id}", self._retrieve)
            app.router.add_post("/v1/batches/{id}/cancel", self._cancel)

    def hold(self, holding: bool = True) -> None:
        """Keep batches in_progress (True) until released (False)."""
        self.holding = holding

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": {"message": message}}, status=status)

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("purpose") != "batch" or "file" not in form:
            return self._error(400, "purpose must be batch, with a file")
        data = form["file"].file.read()
        if len(data) > self.max_file_bytes:
            return self._error(400, f"file exceeds the {self.max_file_bytes} byte limit")
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "purpose": "batch"})

    async def _content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"])
        return self._error(404, "no such file") if data is None else web.Response(body=data)

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("input_file_id") not in self.files:
            return self._error(400, "no such input file")
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines() if line]
        batch = {"id": f"batch_{next(self._ids)}", "object": "batch", "endpoint": body.get("endpoint"),
                 "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                 "status": "validating", "output_file_id": None, "error_file_id": None, "errors": None,
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "_lines": lines,
                 "_polls": 0, "metadata": body.get("metadata"), "created_at": int(time.time())}
        self.batches[batch["id"]] = batch
        return web.json_response(self._shown(batch))

    async def _list(self, request: web.Request) -> web.Response:
        """Newest first, `limit` a page, the page after the id `after`."""
        newest = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after:
            newest = newest[[b["id"] for b in newest].index(after) + 1:]
        limit = int(request.query.get("limit", 20))
        page = newest[:limit]
        return web.json_response({"object": "list", "data": [self._shown(b) for b in page],
                                  "has_more": len(newest) > limit})

    @staticmethod
    def _shown(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return self._error(404, f"No batch found with id '{request.match_info['id']}'")
        self._advance(batch)
        return web.json_response(self._shown(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return self._error(404, "no such batch")
        if batch["status"] in STEPS:
            batch["status"] = "cancelling"
        return web.json_response(self._shown(batch))

    def _advance(self, batch: dict) -> None:
        """One status a poll; the end as `outcome` (or cancelled) says."""
        status = batch["status"]
        if status == "cancelling":
            self._finish(batch, "cancelled", answered=self.partial)
        elif status == "validating":
            if self.outcome == "failed":
                batch["status"] = "failed"
                batch["errors"] = {"data": [{"code": "invalid_request", "line": 1,
                                             "message": "the model does not support this request"}]}
            else:
                batch["status"] = "in_progress"
        elif status == "in_progress" and not self.holding:
            batch["status"] = "finalizing"
        elif status == "finalizing":
            answered = len(batch["_lines"]) if self.outcome == "completed" else self.partial
            self._finish(batch, self.outcome, answered)

    def _finish(self, batch: dict, status: str, answered: int) -> None:
        outputs, errors = [], []
        for n, line in enumerate(batch["_lines"]):
            fault = self.line_faults.get(n)
            if n >= answered:
                errors.append({"id": f"batch_req_{n}", "custom_id": line["custom_id"], "response": None,
                               "error": {"code": f"batch_{status}", "message": f"the batch {status} first"}})
            elif fault:
                failure = {"status_code": int(fault), "body": {"error": {"message": "injected"}}}
                errors.append({"id": f"batch_req_{n}", "custom_id": line["custom_id"], "response": failure,
                               "error": None})
            else:
                text = self.reply(line["body"])
                prompt = line["body"]["messages"][-1]["content"]
                self.billed.append(line["custom_id"])
                outputs.append({"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None,
                                "response": {"status_code": 200, "request_id": f"req_{n}", "body": {
                                    "id": f"chatcmpl-{n}", "object": "chat.completion",
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": text}}],
                                    "usage": {"prompt_tokens": len(prompt.split()),
                                              "completion_tokens": len(text.split())}}}})
        for name, rows in (("output_file_id", outputs), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[name] = file_id
        batch["status"] = status
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": len(outputs),
                                   "failed": len(errors)}
