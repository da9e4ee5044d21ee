"""Named transfer recipes: the original's kept by name, the measured one the default for GGUF students."""

from __future__ import annotations

import pytest
from lrl_harness import StudentModel, hookimpl
from lrl_harness.api.errors import ConfigError
from lrl_harness.cli.app import main
from lrl_harness.pipeline.config import RunConfig
from lrl_harness.pipeline.recipes import DEFAULT_SETTINGS, RECIPES, apply_recipe, get_recipe, resolve_settings


def test_the_seed_recipe_is_the_original_experiments():
    seed = get_recipe("seed")
    assert (seed.transfer_format, seed.transfer_examples, seed.strategy_in_prompt) == ("label", 100, True)
    assert seed.lora == DEFAULT_SETTINGS
    assert (seed.lora["r"], seed.lora["target_modules"], seed.lora["lr"]) == (8, ["q_proj", "v_proj"], 2e-4)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_has_valid_lora_settings_and_a_known_format(name, task):
    recipe = get_recipe(name)
    resolve_settings(recipe.lora)
    assert recipe.transfer_format in task.transfer_formats
    assert recipe.name == name and recipe.description


def test_answer_logits_only_is_a_checked_switch_on_for_small_only():
    assert get_recipe("small").lora["answer_logits_only"] is True
    assert get_recipe("seed").lora["answer_logits_only"] is False
    with pytest.raises(ConfigError, match="answer_logits_only must be true or false"):
        resolve_settings({"answer_logits_only": "yes"})


def test_applying_a_recipe_replaces_the_students_training_choices():
    student = StudentModel(name="s", path="p", transfer_format="trace", transfer_examples=7, strategy_in_prompt=False,
                           lora={"r": 2}, info={"model": "p"})
    trained = apply_recipe(student, get_recipe("seed"))
    assert (trained.transfer_format, trained.transfer_examples, trained.strategy_in_prompt) == ("label", 100, True)
    assert trained.lora == DEFAULT_SETTINGS and trained.lora is not get_recipe("seed").lora
    assert trained.info == {"model": "p", "recipe": "seed"}
    assert student.transfer_format == "trace"  # a copy: the student itself is unchanged


def test_an_unknown_recipe_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown recipe 'fast'; available: seed, small"):
        RunConfig(recipe="fast").validate()
    out = tmp_path / "run"
    assert main(["run", "--quiet", "--out", str(out), "--recipe", "fast"]) == 2
    assert "unknown recipe 'fast'" in capsys.readouterr().err
    assert not out.exists()


def test_gguf_students_default_to_the_small_recipe_and_hf_to_the_seed():
    from lrl_harness_plugins import gguf_student, hf_student

    assert hf_student.OPTIONS["recipe"].default == "seed"
    assert gguf_student.SMOLLM2_OPTIONS["recipe"].default == "small"
    assert gguf_student.GGUF_OPTIONS["recipe"].default == "small"


class _Students:
    """Two stand-in students: one that takes a ``recipe`` option, one that does not."""

    seen: list = []

    @staticmethod
    @hookimpl
    def register_students(register):
        from lrl_harness.api.options import Option, check_options

        spec = {"recipe": Option(str, "small", "recipe"), "lora": Option(dict, None, "lora", nullable=True)}

        def with_option(task, options, cache_dir):
            options = check_options("the stand-in", spec, options)
            _Students.seen.append(options)
            student = apply_recipe(StudentModel(name="with", path="p"), get_recipe(options["recipe"]))
            student.lora.update(options["lora"] or {})
            return student

        register("with-recipe", with_option, options=spec)
        register("without-recipe", lambda task, options, cache_dir: StudentModel(name="without", path="p",
                                                                                 transfer_format="trace"))


def test_run_recipe_reaches_a_student_through_its_option_so_its_own_lora_stays(tmp_path):
    import lrl_harness_tasks.meeting_rooms as meeting_rooms
    from lrl_harness.api.registry import Registry, make_plugin_manager
    from lrl_harness.pipeline.runner import Pipeline

    registry = Registry(make_plugin_manager(load_entry_points=False, plugins=[meeting_rooms, _Students]))
    config = RunConfig(student="with-recipe", student_options={"lora": {"r": 4}}, recipe="seed").validate()
    student = Pipeline(config, registry, tmp_path / "a").student
    assert _Students.seen[-1]["recipe"] == "seed"
    assert (student.transfer_format, student.lora["r"], student.lora["lr"]) == ("label", 4, 2e-4)
    config = RunConfig(student="without-recipe", recipe="seed").validate()
    student = Pipeline(config, registry, tmp_path / "b").student
    assert (student.transfer_format, student.info["recipe"]) == ("label", "seed")
