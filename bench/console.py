"""What a job shows: the suite's own lines (one per stage) and progress bars only on a terminal; the
libraries' bars and chatter off the console. Everything goes through `logging`, so Hydra's job logging
(conf/hydra/job_logging/synthbench.yaml) writes the whole story to run.log."""

import logging
import os
import sys

from tqdm.auto import tqdm

from bench.secrets import redact

SUITE = ("bench", "runners", "__main__")


def on_terminal() -> bool:
    return sys.stderr.isatty()


def bar(total: int, description: str, unit: str = "it", disable: bool = False) -> tqdm:
    """The suite's progress bar: drawn on a terminal only (a log file gets the stage lines instead)."""
    return tqdm(total=total, desc=description, unit=unit, leave=False, disable=disable or not on_terminal())


def quiet_libraries() -> None:
    """The libraries' progress bars off (datasets, transformers, lm-eval: hundreds of frames per job;
    run.py turns off those made without `disable=`); Hub downloads keep theirs on a terminal, where a
    13 GB download wants one."""
    if not on_terminal():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    import lm_eval.evaluator

    # lm-eval runs `git describe` in the working directory for a field the suite never reads; outside a
    # git checkout git prints "fatal: not a git repository" on every scoring
    lm_eval.evaluator.get_git_commit_hash = lambda: None


class SuiteOnConsole(logging.Filter):
    """The console shows the suite's own INFO lines and every library's errors; the rest (libraries'
    INFO and warnings, the loss points at DEBUG) stays in run.log. Errors go to stderr (ErrorsOnly)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return False
        return record.name.startswith(SUITE) and record.levelno >= logging.INFO


class RedactedFormat(logging.Formatter):
    """Every line a log handler writes, its traceback included, with the held keys scrubbed."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ConsoleFormat(RedactedFormat):
    """The message alone; a warning says it is one."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"warning: {text}" if record.levelno == logging.WARNING else text


class ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR
