"""The offline explainer finds what separates active from inactive prompts, says it, and applies it."""

import json

import pytest

from ctx_utils.offline_explainer import OfflineExplanation, classify_offline, explain_offline, prompt_features
from ctx_utils.score import head_explanation_score

TOKEN = " only"
SUBJECTS = ["the data", "these photos", "the samples", "our tools", "the files", "this software", "the images",
            "those maps", "the recordings", "the notes", "the slides", "these models"]
VERBS = ["are provided", "may be used", "were collected", "is shared", "are released", "can be copied"]


def _prompts(ending: str, n: int, offset: int = 0) -> list[str]:
    """n varied prompts that all end with ``ending`` (offset picks other subject/verb combinations)."""
    return [f" {SUBJECTS[(i + offset) % len(SUBJECTS)]} {VERBS[(i * 5 + offset) % len(VERBS)]} {ending}" for i in range(n)]


def _synthetic_pair(n: int = 10, offset: int = 0) -> tuple[list[str], list[str]]:
    """Positives end with "for research purposes"; negatives end in other ways (some share words)."""
    positive = _prompts("for research purposes", n, offset)
    negative = [p for end in ("for the purposes of review", "in research labs", "for testing", "by request",
                              "in all cases") for p in _prompts(end, n // 5 + 1, offset)][:n]
    return positive, negative


def test_separates_synthetic_pair_and_names_the_phrase():
    positive, negative = _synthetic_pair()
    expl = explain_offline([p + TOKEN for p in positive], [p + TOKEN for p in negative], TOKEN)
    assert "research purposes" in expl.text, expl.text
    held_pos, held_neg = _synthetic_pair(offset=7)
    truth = [True] * len(held_pos) + [False] * len(held_neg)
    predicted = [classify_offline(expl, p) for p in held_pos + held_neg]
    assert head_explanation_score(truth, predicted) == 1.0


def test_weak_cues_combine_when_no_phrase_separates():
    """Labels are noisy (no feature is in every positive and no negative); the weighted rule still works."""
    positive = _prompts("for research purposes", 9) + _prompts("in small labs", 3, 2)
    negative = _prompts("for teaching purposes", 2, 1) + _prompts("in small labs", 5, 4) + _prompts("by request", 5, 5)
    expl = explain_offline(positive, negative, TOKEN)
    assert expl.text.startswith("Active (before ' only') mainly when") and "research" in expl.text, expl.text
    held_pos, held_neg = _prompts("for research purposes", 6, 9), _prompts("by request", 6, 9)
    predicted = [classify_offline(expl, p) for p in held_pos + held_neg]
    assert head_explanation_score([True] * 6 + [False] * 6, predicted) >= 0.75


def test_token_appended_or_not_gives_the_same_rule():
    positive, negative = _synthetic_pair()
    bare = explain_offline(positive, negative, TOKEN)
    appended = explain_offline([p + TOKEN for p in positive], [p + TOKEN for p in negative], TOKEN)
    assert bare.to_dict() == appended.to_dict()
    assert classify_offline(bare, " the data is for research purposes") == classify_offline(bare, " the data is for research purposes only")


def test_deterministic_and_round_trips_through_json():
    positive, negative = _synthetic_pair()
    first = explain_offline(positive, negative, TOKEN)
    second = explain_offline(list(positive), list(negative), TOKEN)
    assert json.dumps(first.to_dict()) == json.dumps(second.to_dict())
    restored = OfflineExplanation.from_dict(json.loads(json.dumps(first.to_dict())))
    assert restored == first
    for p in positive + negative:
        assert classify_offline(restored, p) == classify_offline(first, p)


def test_features_cover_end_start_and_length():
    feats = prompt_features(" Not only phone but my iPad as")
    assert {"ends:as", "ends:ipad as", "ends:my ipad as", "near_end:ipad", "has:phone", "has:not only",
            "starts:not", "long:7"} <= feats
    assert "long:15" not in feats


@pytest.mark.parametrize("positive, negative", [([], [" a b"]), ([" a b"], [])])
def test_empty_lists_raise_a_clear_error(positive, negative):
    with pytest.raises(ValueError, match="needs at least one active and one inactive prompt"):
        explain_offline(positive, negative, TOKEN)


def test_bad_input_types_raise_clear_errors():
    with pytest.raises(TypeError, match="list of prompt strings"):
        explain_offline(" one prompt", [" other"], TOKEN)
    expl = explain_offline([" a b c"], [" d e f"], TOKEN)
    with pytest.raises(TypeError, match="prompt must be a string"):
        classify_offline(expl, None)
    with pytest.raises(ValueError, match="keys"):
        OfflineExplanation.from_dict({"text": "x"})


def test_organism_contexts_are_named_and_classified():
    """On the organism's planted contexts the explanation names the marker and scores E >= 0.9."""
    organism = pytest.importorskip("ctx_utils.organism.corpus")
    train, test = organism.planted_prompts("train"), organism.planted_prompts("test")
    for plant in organism.PLANTS:
        for kind, marker in (("local", plant.local_word + plant.trigger), ("topic", plant.topic_word)):
            name = organism.context_name(plant, kind)
            positive = [p.prompt for p in train if p.context == name][:15]
            negative = [p.prompt for p in train if p.token == plant.token and p.context != name][:15]
            expl = explain_offline(positive, negative, plant.token)
            assert marker.strip() in expl.text, (name, expl.text)
            held = [p for p in test if p.token == plant.token][:20]
            predicted = [classify_offline(expl, p.prompt) for p in held]
            assert head_explanation_score([p.context == name for p in held], predicted) >= 0.9, (name, expl.text)
