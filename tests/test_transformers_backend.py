"""The transformers backend and prompt rendering, on a real tiny Llama built here."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from lrl_harness import Backend, GenerationSettings, ModelSpec
from lrl_harness.api.errors import BackendUnavailableError, ConfigError
from lrl_harness.api.prompting import encode_prompt, prompt_record, render_prompt
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness_plugins import transformers_backend as backend_module
from lrl_harness_plugins.tiny_student import build_tiny_student
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

SMALL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
# Random weights: prompts of different lengths so that left padding is really exercised.
PROMPTS = [
    "Problem:\nMeetings: [9-10]\nAvailable rooms: 1\n",
    "Problem:\nMeetings: [9-11], [10-12], [11-13], [12-14], [13-15]\nAvailable rooms: 2\n\nCan all",
    "Sweep:",
    "Peak 3 > 2 rooms.\nAnswer:",
    "Can all meetings be scheduled?\n",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_student(tmp_path_factory.mktemp("cache"), MeetingRoomsTask(), seed=3, **SMALL)


@pytest.fixture(scope="module")
def backend(model_dir):
    b = backend_module.transformers_backend(ModelSpec(path=str(model_dir)), {"batch_size": 2})
    yield b
    b.close()


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights, so that it visibly changes the output."""
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    config = peft.LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                             init_lora_weights=False, task_type="CAUSAL_LM")
    out = tmp_path_factory.mktemp("adapter")
    peft.get_peft_model(base, config).save_pretrained(out)
    return out


def _manual_greedy(model, ids: list[int], steps: int, eos: int) -> list[int]:
    import torch

    out = []
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            token = int(logits.argmax())
            if token == eos:
                break
            out.append(token)
    return out


def test_is_registered_and_is_a_backend(model_dir):
    registry = Registry(make_plugin_manager(load_entry_points=False, plugins=[backend_module]))
    b = registry.get("backend", "transformers").factory(model=ModelSpec(path=str(model_dir)), options={})
    assert isinstance(b, Backend)
    info = b.info()
    assert (info["device"], info["dtype"], info["batch_size"]) == ("cpu", "float32", 64)
    assert set(info["versions"]) == {"torch", "transformers", "peft"}


def test_generation_is_greedy(backend, model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    settings = GenerationSettings(max_new_tokens=12)
    for prompt, completion in zip(PROMPTS, backend.generate(PROMPTS, settings)):
        expected = _manual_greedy(model, backend.tokenize(prompt), 12, backend.tokenizer.eos_token_id)
        assert completion.text == backend.tokenizer.decode(expected, skip_special_tokens=True)
        assert completion.completion_tokens == len(expected)


def test_batched_output_equals_one_by_one(backend):
    settings = GenerationSettings(max_new_tokens=16)
    progress = []
    batched = backend.generate(PROMPTS, settings, progress=progress.append)
    single = [backend.generate([p], settings)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert progress == [2, 4, 5]


def test_rows_decoding_equals_generate_when_rows_end_apart(model_dir, backend, tmp_path):
    """Greedy rows leave the batch when they end; the tokens are those of model.generate, where
    every row runs to the batch's end. An end token that the random model emits early in some
    rows and never in others makes the rows end apart."""
    from transformers import AutoModelForCausalLM

    settings = GenerationSettings(max_new_tokens=20)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    # the third token of one answer: ends that row (and any other that emits it) early
    end = _manual_greedy(model, backend.tokenize(PROMPTS[1]), 3, backend.tokenizer.eos_token_id)[2]
    copy = tmp_path / "early-end"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    config["eos_token_id"] = [config["eos_token_id"], end]
    (copy / "generation_config.json").write_text(json.dumps(config))
    rows, generate = (backend_module.transformers_backend(ModelSpec(path=str(copy)), {"batch_size": 5, "decode": d})
                      for d in ("rows", "generate"))
    by_rows, by_generate = rows.generate(PROMPTS, settings), generate.generate(PROMPTS, settings)
    assert [(c.text, c.completion_tokens, c.meta) for c in by_rows] == \
        [(c.text, c.completion_tokens, c.meta) for c in by_generate]
    reasons = {c.meta["finish_reason"] for c in by_rows}
    assert reasons == {"stop", "length"}
    assert (rows.info()["decode"], generate.info()["decode"]) == ("rows", "generate")


def test_completion_accounting(backend):
    settings = GenerationSettings(max_new_tokens=7)
    batched = backend.generate(PROMPTS[:3], settings)
    for prompt, c in zip(PROMPTS, batched):
        assert c.prompt_tokens == len(backend.tokenize(prompt))
        assert 0 <= c.completion_tokens <= 7
        assert c.latency_s > 0 and c.ttft_s is None
        assert c.meta["finish_reason"] in ("stop", "length")
    single = backend.generate([PROMPTS[0]], settings)[0]
    assert single.ttft_s is not None and 0 < single.ttft_s <= single.latency_s


def test_tokenize_adds_bos_like_the_tokenizer(backend):
    ids = backend.tokenize("Sweep: 9+1")
    assert ids[0] == backend.tokenizer.bos_token_id
    assert ids == backend.tokenizer("Sweep: 9+1")["input_ids"]


def test_repetition_penalty_and_stop_are_applied(backend):
    plain = backend.generate([PROMPTS[1]], GenerationSettings(max_new_tokens=24))[0]
    penalised = backend.generate([PROMPTS[1]], GenerationSettings(max_new_tokens=24, repetition_penalty=3.0))[0]
    assert plain.text != penalised.text
    stop = plain.text[3:5]
    stopped = backend.generate([PROMPTS[1]], GenerationSettings(max_new_tokens=24, stop=(stop,)))[0]
    assert plain.text.startswith(stopped.text) and stop not in stopped.text
    assert stopped.meta["finish_reason"] == "stop"


def test_model_generation_config_does_not_leak(model_dir, backend, tmp_path):
    """A checkpoint that ships sampling defaults and a repetition penalty (as Qwen's do) must
    still decode exactly as asked."""
    copy = tmp_path / "with-defaults"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "generation_config.json").read_text())
    config.update(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.5)
    (copy / "generation_config.json").write_text(json.dumps(config))
    other = backend_module.transformers_backend(ModelSpec(path=str(copy)), {})
    settings = GenerationSettings(max_new_tokens=16)
    assert [c.text for c in other.generate(PROMPTS, settings)] == [c.text for c in backend.generate(PROMPTS, settings)]


def test_adapter_is_applied(model_dir, adapter_dir, backend):
    import peft
    from transformers import AutoModelForCausalLM

    with_adapter = backend_module.transformers_backend(
        ModelSpec(path=str(model_dir), adapter=str(adapter_dir)), {"batch_size": 3})
    settings = GenerationSettings(max_new_tokens=12)
    adapted = with_adapter.generate(PROMPTS, settings)
    assert [c.text for c in adapted] != [c.text for c in backend.generate(PROMPTS, settings)]
    assert with_adapter.info()["adapter"] == str(adapter_dir)

    reference = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir).eval()
    expected = _manual_greedy(reference, with_adapter.tokenize(PROMPTS[0]), 12, with_adapter.tokenizer.eos_token_id)
    assert adapted[0].text == with_adapter.tokenizer.decode(expected, skip_special_tokens=True)


def test_bad_inputs_are_one_line_errors(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="cannot load model"):
        backend_module.transformers_backend(ModelSpec(path=str(tmp_path / "missing")), {})
    with pytest.raises(ConfigError, match="cannot load adapter"):
        backend_module.transformers_backend(ModelSpec(path=str(model_dir), adapter=str(tmp_path)), {})
    with pytest.raises(ConfigError, match="unknown dtype"):
        backend_module.transformers_backend(ModelSpec(path=str(model_dir)), {"dtype": "int3"})
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
            backend_module.transformers_backend(ModelSpec(path=str(model_dir)), {"device": "cuda"})


# --- prompt rendering -----------------------------------------------------------------------


def test_render_prompt_plain_and_chat(backend, model_dir, tmp_path):
    from transformers import AutoTokenizer

    assert render_prompt(backend.tokenizer, "Problem:\n", chat_template=False) == "Problem:\n"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = ("{{ bos_token }}{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}"
                               "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")
    rendered = render_prompt(tokenizer, "Can all meetings be scheduled?", chat_template=True)
    assert rendered == "<s>[user]Can all meetings be scheduled?[assistant]"
    ids = encode_prompt(tokenizer, rendered)
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id


def test_prompt_record(backend):
    ids = backend.tokenize("Sweep:")
    assert prompt_record("Sweep:", ids) == {
        "prompt_sha256": hashlib.sha256(b"Sweep:").hexdigest(), "prompt_tokens": len(ids)}
