"""One place for the settings: defaults, environment validation, presets, fingerprints, no second default."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from ctx_utils import ablate, explain, heads, held_out, neurons, prompts, score
from ctx_utils.settings import DEFAULTS, PRESETS, STEP_FIELDS, Settings, SettingsError, load_settings

PACKAGE = Path(__file__).resolve().parents[1] / "ctx_utils"


def test_defaults_follow_the_final_paper_run():
    assert (DEFAULTS.rule, DEFAULTS.band, DEFAULTS.ratio, DEFAULTS.max_tokens, DEFAULTS.keep, DEFAULTS.top_k) == (
        "2sigma", "25-75", 0.8, 100, 20, 30)


def test_environment_then_overrides(monkeypatch):
    env = {"CTX_N_DOCS": "1_000", "CTX_HEAD_RULE": "top3", "CTX_SAME_LAYER": "1", "CTX_RATIO": "0.5"}
    s = load_settings(environ=env)
    assert (s.n_docs, s.rule, s.same_layer, s.ratio) == (1000, "top3", True, 0.5)
    s = load_settings(environ=env, rule="2sigma", n_docs=None)  # None in a parameters cell: not set there
    assert (s.rule, s.n_docs) == ("2sigma", 1000)


@pytest.mark.parametrize("env, needle", [
    ({"CTX_N_DOCS": "6k"}, "CTX_N_DOCS='6k' is not valid: set it to a whole number"),
    ({"CTX_MAX_TEST_DOCS": "all"}, "CTX_MAX_TEST_DOCS='all'"),
    ({"CTX_RATIO": "eighty"}, "CTX_RATIO='eighty'"),
    ({"CTX_SAME_LAYER": "maybe"}, "CTX_SAME_LAYER='maybe' is not valid: set it to 1 or 0"),
    ({"CTX_HEAD_RULE": "top5"}, "choose one of ('top3', '2sigma')"),
    ({"CTX_HEAD_BAND": "25-80"}, "CTX_HEAD_BAND='25-80'"),
    ({"CTX_N_DOCS": "0"}, "CTX_N_DOCS=0 must be at least 1"),
    ({"CTX_RATIO": "1.5"}, "between 0 and 1"),
    ({"CTX_PRESET": "fast"}, "CTX_PRESET='fast' is not a preset"),
])
def test_bad_environment_values_name_the_variable(env, needle):
    with pytest.raises(SettingsError) as err:
        load_settings(environ=env)
    assert needle in str(err.value)


def test_unknown_override_is_refused():
    with pytest.raises(SettingsError, match="Unknown settings \\['rulez'\\]"):
        load_settings(environ={}, rulez="top3")


def test_presets():
    assert load_settings(environ={"CTX_PRESET": "oct2023"}).rule == "top3"
    assert load_settings(environ={"CTX_PRESET": "oct2023", "CTX_HEAD_RULE": "2sigma"}).rule == "2sigma"  # a variable wins
    assert set(PRESETS["oct2023"]) <= set(Settings.__dataclass_fields__)


def test_fingerprint_changes_only_with_the_settings_that_shape_the_step():
    base = DEFAULTS.replace(model="organism", corpus="organism", test_corpus="organism", explainer="offline")
    assert base.fingerprint("neurons") == base.replace(rule="top3").fingerprint("neurons")
    assert base.fingerprint("heads") != base.replace(rule="top3").fingerprint("heads")
    assert base.fingerprint("prompts") != base.replace(ratio=0.7).fingerprint("prompts")
    assert base.fingerprint("heads") == base.replace(max_test_docs=10).fingerprint("heads")
    assert base.fingerprint("ablation") != base.replace(max_test_docs=10).fingerprint("ablation")
    for step, names in STEP_FIELDS.items():  # every later step depends on everything its inputs depend on
        assert set(STEP_FIELDS["neurons"]) <= set(names), step


@pytest.mark.parametrize("fn, name, field", [
    (heads.active_heads, "rule", "rule"), (heads.pairs_from_attributions, "rule", "rule"),
    (heads.pairs_from_attributions, "band", "band"), (heads.heads_summary, "rule", "rule"),
    (heads.attribute_neurons, "include_same_layer", "same_layer"), (held_out.held_out_set, "rule", "rule"),
    (prompts.find_activating_prompts, "ratio", "ratio"), (prompts.find_activating_prompts, "k", "top_k"),
    (prompts.find_activating_prompts, "keep", "keep"), (prompts.find_activating_prompts, "max_tokens", "max_tokens"),
    (prompts.truncate, "ratio", "ratio"), (neurons.select_next_token_neurons, "per_layer", "per_layer"),
    (score.score_explanations, "max_prompts", "max_held_out"), (explain.explain_pairs, "variant", "prompt_variant"),
    (ablate.activity_matrix, "include_same_layer", "same_layer"),
])
def test_library_defaults_are_the_settings(fn, name, field):
    assert inspect.signature(fn).parameters[name].default == getattr(DEFAULTS, field)


SECOND_DEFAULT = re.compile(  # a parameter default (annotated, or in a `def` line), not a keyword argument in a call
    r"""\b(rule|band)\s*:\s*[\w\[\] |]+=\s*["']|\bdef .*\b(rule|band)=["']|\b(ratio|min_share)\s*(:\s*float)?\s*=\s*0\.\d""")


def test_no_second_default_for_the_rule_band_ratio_or_neuron_filter():
    """`grep` finds the defaults of the rule, band, 80 % ratio and activity filter in settings.py only."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "settings.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = SECOND_DEFAULT.search(line)
            if match and line[: match.start()].count('"') % 2 == 0:  # not inside a message string
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "second defaults (take them from ctx_utils.settings.DEFAULTS):\n" + "\n".join(offenders)


def test_readme_documents_every_setting():
    from dataclasses import fields

    from ctx_utils.settings import env_name

    readme = (PACKAGE.parent / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [env_name(f.name) for f in fields(Settings) if f"`{env_name(f.name)}`" not in readme]
    assert not missing, f"docs/settings.md's settings table lacks {missing}"


# ------------------------------------------------------------------------- issue 23, item 3: typo'd variables


@pytest.mark.parametrize("variable, meant", [("CTX_RULE", "CTX_HEAD_RULE"), ("CTX_NDOCS", "CTX_N_DOCS"),
                                             ("CTX_BAND", "CTX_HEAD_BAND"), ("CTX_RESULT", "CTX_RESULTS")])
def test_a_misspelt_setting_that_shapes_results_is_an_error_naming_the_real_one(variable, meant):
    with pytest.raises(SettingsError) as err:
        load_settings({variable: "top3"})
    assert f"{variable} is not a variable the kit reads: did you mean {meant}?" in str(err.value)


def test_other_unknown_variables_are_warned_of():
    with pytest.warns(UserWarning, match="CTX_LLM_TIMEOT is not a variable the kit reads: it is ignored "
                                         r"\(did you mean CTX_LLM_TIMEOUT\?\)"):
        load_settings({"CTX_LLM_TIMEOT": "5"})
    with pytest.warns(UserWarning, match="CTX_WHATEVER is not a variable the kit reads: it is ignored "
                                         r"\(the variables are CTX_ACTIVITY_DOCS"):
        load_settings({"CTX_WHATEVER": "1"})


def test_every_variable_the_kit_reads_is_known():
    import re

    from ctx_utils.settings import KIT_ROOT, known_variables

    read = set()
    for path in [*KIT_ROOT.glob("ctx_utils/**/*.py"), KIT_ROOT / "Makefile", *KIT_ROOT.glob("notebooks/*.ipynb")]:
        read |= set(re.findall(r"CTX_[A-Z][A-Z_]*[A-Z]", path.read_text(encoding="utf-8")))
    assert read - set(known_variables()) == {"CTX_RULE", "CTX_NDOCS"}  # the examples of typos in settings.py


def test_a_notebook_prints_one_line_of_its_own_and_the_changed_settings_without_a_machine_path():
    settings = DEFAULTS.replace(model="/home/someone/models/my-model", keep=7)
    line = settings.describe(("rule",))
    assert "\n" not in line and line.startswith("Settings: model 'my-model', rule '2sigma', keep 7")
    assert "/home" not in line and "batch_size" not in line, "only the notebook's own and the changed settings"
    assert "batch_size" in DEFAULTS.describe(), "the full table stays on request"


def test_a_notebook_shows_a_file_setting_by_its_name_not_this_machines_path(tmp_path):
    corpus = str(tmp_path / "train.jsonl")
    settings = DEFAULTS.replace(corpus=corpus, model="organism")
    assert settings.shown("corpus") == "train.jsonl" and settings.shown("model") == "organism"
    assert corpus not in settings.describe(("corpus",)) and "'train.jsonl'" in settings.describe(("corpus",))
