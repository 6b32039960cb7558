"""Generation steps: each thing a strategy asks an LLM for, first-class (as distilabel's and DataDreamer's
steps are). A step names its prompt (a template per task kind under `strategy.prompts.<step>`, from
conf/prompts/: system and user text, the reply format, the parse patterns, stop strings), who is asked
(the teacher or the augmenter), and how the simulated teacher answers it. Adding a step is one line here
and its prompt YAML; strategies and the simulated teacher take the step, never a bare string."""

import json
import re
from dataclasses import dataclass

from bench.errors import BenchError


@dataclass(frozen=True)
class Step:
    name: str  # the prompt's key under strategy.prompts, and the request's kind in generations.jsonl
    role: str  # who is asked: teacher (answers, examples) or augmenter (writes or checks questions)
    simulated: str  # how the simulated teacher answers: draw (an unused example near the source),
    # rephrase (reword the source), answer (the gold answer) or check (a yes)
    default_reply: str  # the simulator's reply format when the prompt names none

    @staticmethod
    def schema(template: dict, labels: list) -> str:
        """The JSON schema a structured reply to the step keeps to (teacher.structured), as canonical
        text: the fields its reply format's first parse pattern reads — a label one of the task's labels,
        a self-check's verdict yes or no, anything else text."""
        pattern = template["parse"] if isinstance(template["parse"], str) else template["parse"][0]
        names = list(dict.fromkeys(re.findall(r"\(\?P<(\w+)>", pattern)))
        kinds = {"label": {"type": "string", "enum": list(labels)} if labels else {"type": "string"},
                 "verdict": {"type": "string", "enum": ["yes", "no"]}}
        properties = {n: kinds.get(n, {"type": "string"}) for n in names}
        return json.dumps({"type": "object", "properties": properties, "required": names,
                           "additionalProperties": False}, sort_keys=True)

    def template(self, prompts: dict, kind: str, strategy: str) -> dict:
        """The step's prompt for a task kind: system/user text, reply_format, parse, stop."""
        try:
            return prompts[self.name][kind]
        except KeyError:
            raise BenchError(f"strategy {strategy} has no '{self.name}' prompt for {kind} tasks; add one "
                             "under prompts in conf/strategy/ or conf/prompts/") from None


NEW_EXAMPLE = Step("new_example", "teacher", "draw", "Question: {{ question }}\nAnswer: {{ answer }}")
NEW_QUESTION = Step("new_question", "augmenter", "draw", "Question: {{ question }}")
REPHRASE = Step("rephrase", "augmenter", "rephrase", "Question: {{ question }}")
ANSWER = Step("answer", "teacher", "answer", "{{ answer }}")
CHECK = Step("check", "augmenter", "check", "Yes")
CORPUS = Step("corpus", "teacher", "draw", "Text: {{ question }}")  # a pre-training text near a topic
STEPS = {step.name: step for step in (NEW_EXAMPLE, NEW_QUESTION, REPHRASE, ANSWER, CHECK, CORPUS)}


def step_named(name: str) -> Step:
    """The step a request was made for (its `kind`)."""
    try:
        return STEPS[name]
    except KeyError:
        raise BenchError(f"no generation step {name!r}; the steps are {', '.join(STEPS)} (bench/steps.py)"
                         ) from None


def structured_fields(text: str) -> dict | None:
    """A structured reply's fields (a JSON object of texts), or None when it is not one."""
    try:
        reply = json.loads(text)
    except ValueError:
        return None
    if not isinstance(reply, dict) or not all(isinstance(v, str) for v in reply.values()):
        return None
    return {k: v.strip() for k, v in reply.items()}
