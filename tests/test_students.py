import torch

from bench.students import Student, parameter_count, torch_dtype
from tests.conftest import typed_config

TEXTS = ["What is the capital of France ?\nClass: LOC", "Who wrote Hamlet ?\nClass: HUM"] * 20


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_tiny_is_a_few_million_parameter_llama_with_its_own_tokenizer():
    student = Student(typed_config().student, TEXTS)
    model = student.base_model()
    assert model.config.model_type == "llama"
    assert student.tokenizer.bos_token == "<s>" and student.tokenizer.pad_token == "<pad>"
    ids = student.tokenizer("Who wrote Hamlet ?")["input_ids"]
    assert ids[0] == student.tokenizer.bos_token_id
    assert student.tokenizer.decode(ids, skip_special_tokens=True) == "Who wrote Hamlet ?"
    full = Student(typed_config().student, TEXTS * 50)  # the real vocabulary needs more text
    assert 1e6 < parameter_count(full.base_model()) < 8e6


def test_every_call_returns_the_same_base_weights():
    student = Student(typed_config(*["student.architecture.num_hidden_layers=1"]).student, TEXTS)
    first = student.base_model()
    with torch.no_grad():
        next(first.parameters()).add_(1.0)  # "training"
    assert same_weights(student.base_model(), student.base_model())
    assert not same_weights(first, student.base_model())


def test_from_pretrained_path_loads_a_saved_checkpoint(tmp_path):
    scratch = Student(typed_config("student.architecture.num_hidden_layers=1").student, TEXTS)
    model = scratch.base_model()
    model.save_pretrained(tmp_path)
    scratch.tokenizer.save_pretrained(tmp_path)
    # the same code path as student=350m / 1.4b / 7b, pointed at a local folder
    reloaded = Student(typed_config("student=350m", f"student.pretrained={tmp_path}").student)
    assert same_weights(reloaded.base_model(), model)
    assert (
        reloaded.tokenizer("Who wrote Hamlet ?")["input_ids"]
        == scratch.tokenizer("Who wrote Hamlet ?")["input_ids"]
    )


def test_lora_is_a_switch():
    cfg = typed_config(
        "student.architecture.num_hidden_layers=1", "student.lora.enabled=true", "student.lora.r=4"
    )
    model = Student(cfg.student, TEXTS).base_model()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable < parameter_count(model) / 4
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_dtype_is_fp32_on_cpu():
    assert torch_dtype("auto") == (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
