"""Probe a teacher before a sweep: ask it to answer every seed example, through the full teacher path
(cache, budget, retries, accounting), and report how many it got right, how fast it answered, and
what it cost. Writes a run record like a job's (config, teacher_usage.json, generations.jsonl, W&B).

    python -m runners.probe_teacher teacher=vllm_server teacher.backend.base_url=http://gpu01:8000/v1 \\
        task=gsm8k seed_set.size=20
"""

import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bench.config import check_yaml_syntax, conf_dir
from bench.config_store import register_configs
from bench.errors import BenchError
from bench.secrets import redact
from bench.steps import ANSWER
from bench.tasks import question_of
from bench.teachers import Request, build_teachers
from bench.tracking import Tracker
from runners.inputs import prepare

register_configs()


def probe(cfg: DictConfig, run_dir: Path) -> dict:
    inputs = prepare(cfg)
    config, data, seed_set = inputs.config, inputs.data, inputs.seed_set
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(cfg, resolve=True)))
    teacher, augmenter = build_teachers(config, data, [e.id for e in seed_set])
    requests = [
        Request(messages=({"role": "user", "content": example.prompt},), temperature=0.0,
                max_tokens=config.task.max_new_tokens, kind=ANSWER.name, reply_format="{{ answer }}",
                source={"id": example.id, "question": question_of(example, data), "target": example.target,
                        "label": example.label})
        for example in seed_set
    ]
    tracker = Tracker(run_dir, config.logger, OmegaConf.to_container(cfg, resolve=True),
                      name=f"probe-{config.teacher.name}-{config.task.name}", job_type="teacher-probe")
    failed = True
    try:
        started = time.perf_counter()
        answers = teacher.generate(requests, description=f"asking {config.teacher.name}")
        seconds = time.perf_counter() - started
        correct = [a is not None and data.kind.is_correct(a.text, e.label, config.task.labels)
                   for a, e in zip(answers, seed_set)]
        usage = tracker.log_teachers(teacher, augmenter)
        tracker.summarize({"probe/accuracy": sum(correct) / len(correct), "probe/seconds": seconds,
                     "probe/answered": sum(a is not None for a in answers)})
        failed = False
    finally:
        tracker.finish(failed)
    line = usage.get("teacher", {})
    print(f"\nteacher {config.teacher.name} ({teacher.backend.model}) on {len(seed_set)} {config.task.name} "
          f"seed examples: {sum(correct)} correct, {sum(a is not None for a in answers)} answered, "
          f"{seconds:.1f} s, {line.get('requests', 0)} queries ({line.get('cache_hits', 0)} cached), "
          f"{line.get('prompt_tokens', 0) + line.get('completion_tokens', 0):,} tokens, "
          f"${line.get('cost_usd', 0.0):.4f}, faults {line.get('faults', {})}")
    for answer, example in list(zip(answers, seed_set))[:3]:
        text = "(no answer)" if answer is None else answer.text.strip().replace("\n", " ")[:100]
        print(f"  {example.id}: gold {example.label!r} <- {text!r}")
    print(f"run record: {run_dir}")
    return usage


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        probe(cfg, Path(HydraConfig.get().runtime.output_dir))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):  # its own help, not run.py's (Hydra's template is the app's)
        print(f"usage: python -m runners.probe_teacher [config overrides]\n\n{__doc__}")
        sys.exit(0)
    try:
        check_yaml_syntax(sys.argv[1:], conf_dir())
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
