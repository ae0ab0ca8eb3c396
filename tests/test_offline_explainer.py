"""The offline explainer states a few checkable cues; the offline reader classifies from that text alone."""

import inspect
import json

import pytest

from ctx_utils import offline_reader
from ctx_utils.offline_explainer import (OfflineExplanation, best_single_word, classify_offline, explain_offline,
                                         fit_word_classifier, prompt_cues)
from ctx_utils.offline_reader import Cue, OfflineReader, read_explanation
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


def _noisy_pair() -> tuple[list[str], list[str]]:
    """No cue is in every positive and no negative: the points rule is needed."""
    positive = _prompts("for research purposes", 9) + _prompts("in small labs", 3, 2)
    negative = _prompts("for teaching purposes", 2, 1) + _prompts("in small labs", 5, 4) + _prompts("by request", 5, 5)
    return positive, negative


def test_separates_synthetic_pair_and_names_the_phrase():
    positive, negative = _synthetic_pair()
    expl = explain_offline([p + TOKEN for p in positive], [p + TOKEN for p in negative], TOKEN)
    assert expl.form == "exact" and "research purposes" in expl.text, expl.text
    held_pos, held_neg = _synthetic_pair(offset=7)
    truth = [True] * len(held_pos) + [False] * len(held_neg)
    predicted = [classify_offline(expl, p) for p in held_pos + held_neg]
    assert head_explanation_score(truth, predicted) == 1.0


def test_weak_cues_become_a_points_rule_a_person_can_add_up():
    expl = explain_offline(*_noisy_pair(), TOKEN)
    assert expl.form == "points" and expl.text.startswith("Active (next token ' only') when the points reach 0. Start at ")
    assert "research" in expl.text and 1 <= len(expl.cues) <= 6, expl.text
    held_pos, held_neg = _prompts("for research purposes", 6, 9), _prompts("by request", 6, 9)
    predicted = [classify_offline(expl, p) for p in held_pos + held_neg]
    assert head_explanation_score([True] * 6 + [False] * 6, predicted) >= 0.75
    # By hand, from the sentence: the start plus the points of the cues that hold, active at 0 or more.
    prompt = held_pos[0]
    cues = prompt_cues(prompt)
    total = expl.start + sum(c.points for c in expl.cues if c.cue in cues)
    assert classify_offline(expl, prompt) == (total >= 0)


@pytest.mark.parametrize("pair", ["synthetic", "noisy", "one_class", "single_word"])
def test_the_text_states_exactly_the_machine_readable_rule(pair):
    if pair == "single_word":
        expl = best_single_word(*_noisy_pair(), TOKEN)
    else:
        positive, negative = {"synthetic": _synthetic_pair(), "noisy": _noisy_pair(), "one_class": (_noisy_pair()[0], [])}[pair]
        expl = explain_offline(positive, negative, TOKEN)
    read = read_explanation(expl.text)
    assert read.token == TOKEN and read.start == expl.start
    assert list(read.cues) == [(c.cue, c.points) for c in expl.cues]


def test_reader_is_built_from_the_text_alone():
    """The reader's only inputs are a string and a prompt; corrupting every other field changes nothing."""
    assert list(inspect.signature(OfflineReader.__init__).parameters) == ["self", "text"]
    assert list(inspect.signature(offline_reader.classify).parameters) == ["text", "prompt"]
    expl = explain_offline(*_noisy_pair(), TOKEN)
    held = _prompts("for research purposes", 6, 9) + _prompts("by request", 6, 9) + _prompts("in small labs", 6, 3)
    before = [classify_offline(expl, p) for p in held]
    expl.start, expl.cues, expl.n_positive = 10**6, [], 0  # the hidden fields say "always active" now
    assert [classify_offline(expl, p) for p in held] == before
    assert len(set(before)) == 2  # the prompts are not all classified alike, so the check has teeth


def test_two_pairs_with_the_same_text_get_the_same_classifications():
    """Different training prompts, same sentence: the held-out answers are identical."""
    first = explain_offline(*_synthetic_pair(), TOKEN)
    second = explain_offline(*_synthetic_pair(n=15, offset=3), TOKEN)
    second.text = first.text
    held = _synthetic_pair(offset=7)[0] + _synthetic_pair(offset=7)[1] + _noisy_pair()[1]
    assert [classify_offline(first, p) for p in held] == [classify_offline(second, p) for p in held]


def test_a_hand_written_sentence_is_read_like_a_generated_one():
    text = "Active (next token ' only') exactly when the text ends with 'research purposes' (9/9 active, 0/9 inactive)."
    reader = OfflineReader(text)
    assert reader(" the data is for research purposes") and not reader(" the data is for testing")
    unless = OfflineReader("Active (next token ' only') unless the text contains 'request' (0/9 active, 5/9 inactive).")
    assert unless(" the data") and not unless(" sent by request")
    points = OfflineReader("Active (next token ' x') when the points reach 0. Start at -2. +3 if 'data' is among the "
                           "last 4 words (1/2 active, 0/2 inactive). -2 if the text has at least 5 words (0/2 active, 2/2 inactive).")
    assert points(" the data is here") and not points(" a b c d") and not points(" the data is here and there")
    assert OfflineReader("Always active (next token ' x'): nothing to contrast.")(" anything")
    assert not OfflineReader("Never active (next token ' x'): nothing to contrast.")(" anything")


def test_cues_mean_what_they_say():
    t, w = offline_reader.tokens(" Not only phone, but my iPad as"), offline_reader.words(" Not only phone, but my iPad as")
    assert Cue("ends", "ipad as").holds(t, w) and not Cue("ends", "ipad").holds(t, w)
    assert Cue("has", "not only").holds(t, w) and Cue("has", ",").holds(t, w) and not Cue("has", "only not").holds(t, w)
    assert Cue("near_end", "but 4").holds(t, w) and not Cue("near_end", "phone 4").holds(t, w)  # the comma is no word
    assert Cue("long", "7").holds(t, w) and not Cue("long", "8").holds(t, w)
    # Every cue the explainer proposes for a prompt holds for it when the reader checks it.
    for prompt in _noisy_pair()[0] + [" don't stop: 1, 2, 3 \"quoted\" it's"]:
        pt, pw = offline_reader.tokens(prompt), offline_reader.words(prompt)
        assert all(c.holds(pt, pw) for c in prompt_cues(prompt))


def test_quotes_and_apostrophes_survive_the_text():
    positive = [f" {s} don't \"stop\"" for s in SUBJECTS[:6]]
    negative = [f" {s} go on" for s in SUBJECTS[6:12]]
    expl = explain_offline(positive, negative, TOKEN)
    assert OfflineReader(expl.text)(" we don't \"stop\"") and not OfflineReader(expl.text)(" we go on"), expl.text


def test_token_appended_or_not_gives_the_same_explanation():
    positive, negative = _synthetic_pair()
    bare = explain_offline(positive, negative, TOKEN)
    appended = explain_offline([p + TOKEN for p in positive], [p + TOKEN for p in negative], TOKEN)
    assert bare.to_dict() == appended.to_dict()


def test_deterministic_and_round_trips_through_json():
    positive, negative = _noisy_pair()
    first = explain_offline(positive, negative, TOKEN)
    assert json.dumps(first.to_dict()) == json.dumps(explain_offline(list(positive), list(negative), TOKEN).to_dict())
    assert OfflineExplanation.from_dict(json.loads(json.dumps(first.to_dict()))) == first


def test_one_class_pairs_say_so_and_empty_input_raises():
    always = explain_offline([" a b"], [], TOKEN)
    assert always.form == "constant" and always.text.startswith("Always active") and classify_offline(always, " z")
    assert not classify_offline(explain_offline([], [" a b"], TOKEN), " a b")
    with pytest.raises(ValueError, match="at least one active or inactive"):
        explain_offline([], [], TOKEN)


def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="list of prompt strings"):
        explain_offline(" one prompt", [" other"], TOKEN)
    expl = explain_offline([" a b c"], [" d e f"], TOKEN)
    with pytest.raises(TypeError, match="prompt must be a string"):
        classify_offline(expl, None)
    with pytest.raises(ValueError, match="keys"):
        OfflineExplanation.from_dict({"text": "x"})
    with pytest.raises(ValueError, match="needs the LLM"):
        OfflineReader("contains a comparison or parallel structure")


def test_word_classifier_is_not_an_explanation_but_classifies():
    positive, negative = _noisy_pair()
    classifier = fit_word_classifier(positive, negative, TOKEN)
    assert len(classifier.weights) > 6  # far more weights than any sentence states
    held = _prompts("for research purposes", 6, 9) + _prompts("by request", 6, 9)
    assert head_explanation_score([True] * 6 + [False] * 6, [classifier(p) for p in held]) >= 0.75


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
            assert marker.strip().lower() in expl.text.lower(), (name, expl.text)
            held = [p for p in test if p.token == plant.token][:20]
            predicted = [classify_offline(expl, p.prompt) for p in held]
            assert head_explanation_score([p.context == name for p in held], predicted) >= 0.9, (name, expl.text)
