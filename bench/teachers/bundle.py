"""The LLMs one cell queries: the teacher, the augmenter (the teacher's model unless `augmenter` is set)
and the cluster agent's judge, over one generation cache, with the query budget Q. Each is built on first
use, so a cell that generates nothing builds none; `check` builds the teacher and augmenter before any
training, so a bad setting or a missing API key fails first."""

from functools import cached_property

from bench.config import BenchConfig
from bench.tasks import Example, TaskData
from bench.teachers import Budget, Teacher, build_backend, build_teachers, make_teacher, open_cache


class TeacherBundle:
    def __init__(self, config: BenchConfig, task: TaskData, seed_set: list[Example]):
        self.config, self.task, self.seed_set = config, task, seed_set

    @cached_property
    def _pair(self) -> tuple:
        return build_teachers(self.config, self.task, [e.id for e in self.seed_set])

    @property
    def teacher(self) -> Teacher:
        return self._pair[0]

    @property
    def augmenter(self) -> Teacher:
        return self._pair[1]

    @property
    def budget(self) -> Budget:
        """The query budget Q the teacher draws on (and the augmenter, when count_augmenter)."""
        return self.teacher.budget

    def check(self, probe: bool) -> None:
        """Build the teachers and their budget now, so a bad setting fails before any training, and send a
        remote backend one tiny request (`teacher.probe`): an unreachable server or a refused key too."""
        teachers = self._pair  # built whether or not probed: a missing API key fails here, not later
        if probe:
            for teacher in {id(t.backend): t for t in teachers}.values():
                teacher.probe()

    @cached_property
    def cluster_judge(self) -> Teacher:
        """The cluster agent's LLM: its own budget (diversity.cluster_agent.max_queries), the shared cache."""
        agent = self.config.diversity.cluster_agent
        cfg = agent.teacher or self.config.teacher
        backend = (self.teacher.backend if agent.teacher is None
                   else build_backend(cfg, self.task, {e.id for e in self.seed_set}))
        return make_teacher(cfg, backend, open_cache(self.config), Budget(agent.max_queries))

    def used(self) -> tuple:
        """The teachers the cell asked for (each is built on first use)."""
        built = self._pair if "_pair" in self.__dict__ else ()
        return (*built, self.cluster_judge) if "cluster_judge" in self.__dict__ else built
