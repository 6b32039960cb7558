"""Teachers: every LLM the suite queries goes through `Teacher` (bench/teachers/teacher.py: the cache, the
budget and its accounts, concurrency, retries) in front of one backend class per way of running a model
(the contract: bench/teachers/backend.py; docs/teachers.md, "Writing a backend")."""

import math

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate

from bench.config import BenchConfig, BudgetConfig, TeacherConfig
from bench.errors import BenchError, last_line
from bench.tasks import TaskData
from bench.teachers.accounts import Budget, Ledger, RoleUsage
from bench.teachers.backend import (
    LocalBackend,
    RejectedError,
    RemoteBackend,
    Request,
    Response,
    RetryableError,
    TeacherFailed,
)
from bench.teachers.cache import GenerationCache, open_cache
from bench.teachers.teacher import Teacher

__all__ = ["Budget", "GenerationCache", "Ledger", "LocalBackend", "RejectedError", "RemoteBackend", "Request",
           "Response", "RetryableError", "RoleUsage", "Teacher", "TeacherFailed", "build_backend",
           "build_teachers", "make_teacher", "open_cache", "query_budget"]


def query_budget(cfg: BudgetConfig, seed_size: int) -> int | None:
    """Q: max_queries, or floor(ratio x |S|) so the ratio form never exceeds its budget, at most `cap` (the
    ranges are checked in BudgetConfig)."""
    if cfg.ratio is not None:
        q = math.floor(round(cfg.ratio * seed_size, 6))  # 2.01 x 100 is 200.999...97 in floating point
        return q if cfg.cap is None else min(q, cfg.cap)
    return cfg.max_queries


def build_backend(cfg: TeacherConfig, task: TaskData, exclude_ids: set):
    settings = dict(cfg.backend)
    if "_target_" not in settings:
        raise BenchError(f"teacher {cfg.name}: backend._target_ must name the backend class")
    try:
        needs_task = getattr(get_class(settings["_target_"]), "needs_task", False)
    except (ImportError, ValueError) as error:
        raise BenchError(f"teacher {cfg.name}: cannot import {settings['_target_']} ({error})") from None
    try:  # partial, then called: instantiate would turn the task's data into a config node, slowly
        make = instantiate(settings, _partial_=True)
    except InstantiationException as error:
        raise BenchError(f"teacher {cfg.name}: {last_line(error)}") from None
    return make(task=task, exclude_ids=exclude_ids) if needs_task else make()


def build_teachers(cfg: BenchConfig, task: TaskData, seed_ids: list) -> tuple:
    """(teacher, augmenter) over one cache. Both draw on one budget of Q queries unless
    budget.count_augmenter is false; without an augmenter config the teacher's model plays both roles."""
    cache = open_cache(cfg)
    budget = Budget(query_budget(cfg.budget, len(seed_ids)), cfg.budget.count_timeouts)
    # the test split is never in task.train; the seed set is what the simulator must not hand out
    exclude = set(seed_ids)

    teacher_backend = build_backend(cfg.teacher, task, exclude)
    teacher = make_teacher(cfg.teacher, teacher_backend, cache, budget)
    augmenter_cfg = cfg.augmenter or cfg.teacher
    augmenter_backend = (
        teacher_backend if cfg.augmenter is None else build_backend(cfg.augmenter, task, exclude)
    )
    own_budget = Budget(None, cfg.budget.count_timeouts)  # counted and reported, not capped
    augmenter = make_teacher(augmenter_cfg, augmenter_backend, cache,
                             budget if cfg.budget.count_augmenter else own_budget)
    return teacher, augmenter


def make_teacher(cfg: TeacherConfig, backend, cache, budget: Budget) -> Teacher:
    return Teacher(backend, cache, budget, max_concurrency=cfg.max_concurrency, max_attempts=cfg.max_attempts,
                   backoff_s=cfg.backoff_s, max_backoff_s=cfg.max_backoff_s, prices=dict(cfg.prices),
                   max_failure_share=cfg.max_failure_share, name=cfg.name, structured=cfg.structured)
