"""The requests a teacher must pay for, as jobs of a provider's Batch API (`teacher.backend.mode=batch`:
OpenAI's, and any server implementing it): at the provider's batch discount, results within its window.

A round's requests (after the cache and the budget have had their say) become one JSONL file and one job
(several, past the provider's limits). The job's id is stored in the generation cache the moment the
provider gives it, under the set of requests it asks: a run killed or requeued while the job runs finds
it there on its rerun and polls the same job, never submitting it twice. A job is also tagged with that
set (its `metadata`), and the cache marks the submission before it starts: a run killed between the
provider's answer and the id's write finds the job in the provider's list on its rerun. Polling backs
off and shows the job's progress. Its output and error files are read back through the same
accounting, validation and cache as live replies; the requests it left unanswered (a per-line error, an
expired or cancelled job) are asked again — as a new, smaller job or live (`batch.retry`) — up to
`teacher.max_attempts` in all, and only what was answered is paid for."""

import asyncio
import hashlib
import json
import time

from bench.errors import BenchError
from bench.teachers.backend import TeacherFailed, stored
from bench.teachers.sender import Sender

WORKING = ("validating", "in_progress", "finalizing", "cancelling")
TAG = "synthbench_requests"  # the job's metadata key: the hash of the set of requests it asks
SUBMITTING = "submitting:"  # the cache's mark, with the time, while a job is being created
CLOCK_SLACK_S = 600  # this machine's and the provider's clocks may disagree by this much
FILE_LIMIT_STATUS = (400, 413)


class BatchSender(Sender):
    def send(self, requests, keys, indices, results, bar) -> None:
        asyncio.run(self.opened(self._send(requests, keys, indices, results, bar)))

    async def _send(self, requests, keys, indices, results, bar) -> None:
        pending = list(indices)
        for attempt in range(1, self.max_attempts + 1):
            held = [i for i in pending if self._slot(requests[i])]  # a budget slot each, or refused
            bar.update(len(pending) - len(held))
            if not held:
                return
            if attempt > 1 and self.backend.batch.retry == "live":
                for _ in held:  # the live path takes a slot for each itself
                    self.budget.settle(answered=False)
                await self._run_concurrent(requests, keys, held, results, bar)
                return
            lines = {i: json.dumps({"custom_id": keys[i], "method": "POST", "url": "/v1/chat/completions",
                                    "body": self.backend.chat_body(requests[i])}) + "\n" for i in held}
            answers = {}
            for chunk in self._chunks(lines):
                answers.update(await self._job(requests, keys, chunk, lines, bar))
            pending = []
            for i in held:
                request, response = requests[i], answers.get(keys[i])
                if response is None and attempt < self.max_attempts:  # asked again: a slot taken anew
                    self.budget.settle(answered=False)
                    self.usage.of(request.role).retries += 1
                    pending.append(i)
                elif self._account(request, response):
                    response.key = keys[i]
                    self.cache.put(keys[i], self.identity(request), stored(response))
                    results[i] = self._usable(request, response)

    def _slot(self, request) -> bool:
        if self.budget.try_take():
            return True
        self._refuse(request)
        return False

    def _chunks(self, lines: dict) -> list[list]:
        """The requests (their JSONL lines) as jobs within the provider's limits (requests, bytes)."""
        chunks, size, limits = [[]], 0, self.backend.batch
        for i, line in lines.items():
            length = len(line.encode())
            if length > limits.max_bytes:
                raise BenchError(f"one request is {length} bytes, over teacher.backend.batch.max_bytes="
                                 f"{limits.max_bytes}: raise it to the provider's file limit, or use "
                                 "mode=live")
            if len(chunks[-1]) >= limits.max_requests or size + length > limits.max_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += length
        return [c for c in chunks if c]

    async def _job(self, requests, keys, chunk, lines: dict, bar) -> dict:
        """{key: Response} of what one job answered: the stored job for these requests, else a new one."""
        asked = hashlib.sha256(json.dumps(sorted(keys[i] for i in chunk)).encode()).hexdigest()
        job_id = self.cache.batch_of(asked)
        if job_id is not None and job_id.startswith(SUBMITTING):
            # killed between submitting and storing the id: the provider holds the job, if any, by its tag
            job_id = await self._tagged(asked, since=float(job_id.removeprefix(SUBMITTING)))
        if job_id is None:
            self.cache.remember_batch(asked, f"{SUBMITTING}{time.time():.0f}")
            try:
                job_id = await self._submit("".join(lines[i] for i in chunk).encode(), asked)
            except BenchError:  # the provider refused it (no job exists); a lost connection keeps the mark
                self.cache.forget_batch(asked)
                raise
            self.cache.remember_batch(asked, job_id)  # before anything else: a rerun polls this job
        job = await self._wait(job_id, len(chunk), bar)
        answers = await self._read(job, requests[chunk[0]].role)
        self.cache.forget_batch(asked)
        return answers

    async def _tagged(self, asked: str, since: float) -> str | None:
        """The provider's job tagged with this set of requests, created since `since` (newest first, a
        page at a time); None when it has none (the kill came before the job was created)."""
        after = None
        while True:
            status, body = await self.backend.call("GET", "/batches", params={
                "limit": 100, **({"after": after} if after else {})})
            if status in (404, 405):
                raise BenchError(f"a batch for these requests may have been created at "
                                 f"{self.backend.base_url} before a kill, and it cannot list its batches "
                                 "to find it: check there, then delete the 'submitting' row from the "
                                 "cache's batches table and run again")
            self._refused("GET /batches", status, body)
            page = json.loads(body)
            for job in page.get("data") or []:
                if (job.get("metadata") or {}).get(TAG) == asked:
                    return job["id"]
                if job.get("created_at", since) < since - CLOCK_SLACK_S:
                    return None  # older than the submission: it is not there
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page["data"][-1]["id"]

    async def _submit(self, jsonl: bytes, asked: str) -> str:
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", jsonl, filename="requests.jsonl", content_type="application/jsonl")
        status, body = await self.backend.call("POST", "/files", data=form)
        self._refused("POST /files", status, body)
        status, body = await self.backend.call("POST", "/batches", json={
            "input_file_id": json.loads(body)["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h", "metadata": {TAG: asked}})
        self._refused("POST /batches", status, body)
        return json.loads(body)["id"]

    def _refused(self, what: str, status: int, body: bytes) -> None:
        if status < 400:
            return
        said = body.decode(errors="replace")[:200]
        if status in (404, 405):
            raise BenchError(f"the server at {self.backend.base_url} has no Batch API ({what} answered "
                             f"{status}): use teacher.backend.mode=live")
        if status in FILE_LIMIT_STATUS and what == "POST /files" and "limit" in said:
            raise BenchError(f"the server refused the batch file ({said}): lower "
                             "teacher.backend.batch.max_bytes to its limit")
        raise TeacherFailed(f"the Batch API at {self.backend.base_url} refused {what} ({status}: {said})")

    async def _wait(self, job_id: str, size: int, bar) -> dict:
        """The job once it has ended, looked at with growing pauses; its progress on the bar."""
        delay, done = self.backend.batch.poll_s, 0
        while True:
            status, body = await self.backend.call("GET", f"/batches/{job_id}")
            if status == 404:
                raise BenchError(f"batch {job_id}, which this cache holds for these requests, no longer "
                                 "exists at the server: if it never ran, remove its row from the cache's "
                                 "batches table and run again (a job that did run would be paid twice)")
            self._refused(f"GET /batches/{job_id}", status, body)
            job = json.loads(body)
            counts = job.get("request_counts") or {}
            finished = counts.get("completed", 0) + counts.get("failed", 0)
            bar.update(max(0, min(finished, size) - done))
            done = max(done, min(finished, size))
            if job["status"] not in WORKING:
                return job
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, self.backend.batch.poll_max_s)

    async def _read(self, job: dict, role: str) -> dict:
        """{key: Response} of the job's output file; the error file's lines are its unanswered."""
        if job["status"] == "failed":
            errors = (job.get("errors") or {}).get("data") or []
            said = "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in errors[:3]) or "no reason"
            raise TeacherFailed(f"batch {job['id']} failed at the server ({said}): fix the requests (the "
                                "model name, a setting it refuses) or use teacher.backend.mode=live")
        answers = {}
        if job.get("output_file_id"):
            status, body = await self.backend.call("GET", f"/files/{job['output_file_id']}/content")
            self._refused("GET the output file", status, body)
            for line in body.decode().splitlines():
                row = json.loads(line) if line.strip() else {}
                reply = row.get("response") or {}
                if reply.get("status_code") == 200:
                    try:
                        answers[row["custom_id"]] = self.backend.response_of(reply["body"])
                    except (KeyError, IndexError, TypeError):
                        self.usage.of(role).fault("malformed", f"a batch output line: {line[:150]}")
        return answers

