"""The exercise checks: a right answer passes, and typical wrong answers fail with a message naming the mistake."""

import pytest
import torch

from ctx_utils import prompts
from ctx_utils.classroom import checks
from ctx_utils.tokens import neuron_key

TEXTS = ["the cat sat on the mat", "for research purposes only as", "the cat"]  # different lengths: padding shows


# ------------------------------------------------------------------------------------------ 01 congruence


def congruence_right(W_out, W_U):
    best = (W_out @ W_U).max(dim=-1)
    return best.values, best.indices


def congruence_cosine(W_out, W_U):
    best = ((W_out / W_out.norm(dim=-1, keepdim=True)) @ (W_U / W_U.norm(dim=0, keepdim=True))).max(dim=-1)
    return best.values, best.indices


def congruence_wrong_axis(W_out, W_U):
    best = (W_out @ W_U).max(dim=0)
    return best.values, best.indices


def congruence_min(W_out, W_U):
    best = (W_out @ W_U).min(dim=-1)
    return best.values, best.indices


def test_congruence_right_passes(tiny_model, capsys):
    checks.check_congruence(congruence_right, tiny_model)
    assert "✓ check_congruence passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (congruence_cosine, r"neuron \d+: expected token .* \(congruence .*\), got .* cosine similarity"),
        (congruence_wrong_axis, r"shape \(25,\), expected \(128,\).*not over the neurons \(dim=0\)"),
        (congruence_min, r"It matches the minimum"),
    ],
)
def test_congruence_mistakes_are_named(tiny_model, wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_congruence(wrong, tiny_model)


def test_an_unfinished_exercise_says_so_and_lets_run_all_go_on(tiny_model, capsys):
    def stub(*args):
        raise NotImplementedError("Your code here")

    checks.check_congruence(stub, tiny_model)  # no exception: the notebook's next cells still run
    assert "congruence is not written yet: replace `raise NotImplementedError`" in capsys.readouterr().out
    checks.check_ablation_hook(stub, tiny_model, TEXTS, layer=0, head_index=1)
    assert "head_ablation_hook is not written yet" in capsys.readouterr().out


def test_an_error_in_the_learners_own_code_still_shows():
    def broken(truth, predicted):
        raise KeyError("typo")

    with pytest.raises(KeyError, match="typo"):
        checks.check_explanation_score(broken)


# ------------------------------------------------------------------------------------ 02 truncation rule


def shortest_right(suffix_acts, target, ratio=0.8):
    passing = (suffix_acts > ratio * target).nonzero()
    return int(passing[0]) + 1 if len(passing) else None


def shortest_greater_equal(suffix_acts, target, ratio=0.8):
    passing = (suffix_acts >= ratio * target).nonzero()
    return int(passing[0]) + 1 if len(passing) else None


def longest(suffix_acts, target, ratio=0.8):
    passing = (suffix_acts > ratio * target).nonzero()
    return int(passing[-1]) + 1 if len(passing) else None


def zero_based(suffix_acts, target, ratio=0.8):
    passing = (suffix_acts > ratio * target).nonzero()
    return int(passing[0]) if len(passing) else None


def test_truncation_right_passes(tiny_model, capsys):
    checks.check_truncation(shortest_right, tiny_model, "the cat sat on the mat for research purposes only as early")
    assert "✓ check_truncation passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (shortest_greater_equal, r"expected 3, got 2\. .*use `>` and not `>=`"),
        (longest, r"expected 3, got 4\. That is the longest passing suffix"),
        (zero_based, r"expected 3, got 2\. That is a 0-based index"),
    ],
)
def test_truncation_mistakes_are_named(tiny_model, wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_truncation(wrong, tiny_model, "the cat sat on the mat")


def test_truncation_checks_the_real_document(tiny_model):
    """A rule right on the hand-made cases but wrong on the real document is caught there.

    The whole document always keeps its own activation, so some suffix always passes on it.
    """
    calls = []

    def right_then_none(suffix_acts, target, ratio=0.8):
        calls.append(len(suffix_acts))
        return shortest_right(suffix_acts, target, ratio) if len(calls) <= len(checks.TRUNCATION_CASES) else None

    with pytest.raises(AssertionError, match=r"On the real document, neuron L1\.N\d+ .*shortest suffix that passes is the last \d+ tokens .*your rule says None"):
        checks.check_truncation(right_then_none, tiny_model, "the cat sat on the mat")


def test_truncation_measures_only_suffixes_a_prompt_can_be(tiny_model, monkeypatch):
    """On a long document the check measures the suffixes shorter than ``max_tokens`` (one forward each), not
    every suffix back to BOS: the rule sees exactly those, shortest first, each re-tokenised with BOS."""
    text = " ".join(["the cat sat on the mat for research purposes only as early"] * 4)
    measured, seen = [], []
    real = prompts.last_token_activations

    def counting(model, seqs, layer, neuron, batch_size=64):
        measured.append([len(s) for s in seqs])
        return real(model, seqs, layer, neuron, batch_size)

    def rule(suffix_acts, target, ratio=0.8):
        seen.append(len(suffix_acts))
        return shortest_right(suffix_acts, target, ratio)

    monkeypatch.setattr(checks.prompts, "last_token_activations", counting)
    position = len(prompts.tokenize(tiny_model, [text])[0]) - 1
    assert position > 12
    checks.check_truncation(rule, tiny_model, text, position=position, max_tokens=8)  # the neuron firing most there
    assert seen[-1] == 7  # suffixes of 1 … 7 tokens: prompts of < 8 tokens
    assert max(max(lengths) for lengths in measured) <= 8 + 1  # BOS + at most 7 document tokens (re-tokenised)


# ---------------------------------------------------------------------------------- 03 head attribution


def attribution_right(model, z, last, layer, neuron):
    z_last = z[torch.arange(len(last)), last]  # [batch, head_layers, n_heads, d_head]
    direction = model.W_O[: z.shape[2]] @ model.W_in[layer][:, neuron]  # [head_layers, n_heads, d_head]
    return (z_last * direction).sum(-1).flatten(1)


def attribution_first_position(model, z, last, layer, neuron):
    return attribution_right(model, z, torch.zeros_like(last), layer, neuron)


def attribution_last_column(model, z, last, layer, neuron):
    return attribution_right(model, z, torch.full_like(last, z.shape[1] - 1), layer, neuron)


def attribution_w_out(model, z, last, layer, neuron):
    z_last = z[torch.arange(len(last)), last]
    return (z_last * (model.W_O[: z.shape[2]] @ model.W_out[layer][neuron])).sum(-1).flatten(1)


def attribution_not_flat(model, z, last, layer, neuron):
    return attribution_right(model, z, last, layer, neuron).reshape(len(last), z.shape[2], z.shape[3])


def test_head_attribution_right_passes(tiny_model, capsys):
    checks.check_head_attribution(attribution_right, tiny_model, TEXTS, layer=1, neuron=5)
    assert "✓ check_head_attribution passed: 3 prompts × 4 heads" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (attribution_first_position, r"prompt \d, head L0\.H\d: expected attribution .* first position \(BOS\)"),
        (attribution_last_column, r"prompt [12], head L0\.H\d: .* right-padded"),
        (attribution_w_out, r"It matches W_out\[layer\]\[neuron\].*W_in\[layer\]\[:, neuron\]"),
        (attribution_not_flat, r"shape \(3, 1, 4\), expected \(3, 4\): flatten"),
    ],
)
def test_head_attribution_mistakes_are_named(tiny_model, wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_head_attribution(wrong, tiny_model, TEXTS, layer=1, neuron=5)


def test_head_attribution_refuses_a_layer_without_earlier_heads(tiny_model):
    with pytest.raises(ValueError, match="layer 1 or later"):
        checks.check_head_attribution(attribution_right, tiny_model, TEXTS, layer=0, neuron=5)


# ------------------------------------------------------------------------------ 04 explainer examples


def examples_right(pair, prompt_sets):
    texts = [p["text"] for p in prompt_sets[neuron_key(pair["layer"], pair["neuron"])]]
    return [texts[i] + pair["token"] for i in pair["positive"]], [texts[i] + pair["token"] for i in pair["negative"]]


def examples_no_token(pair, prompt_sets):
    texts = [p["text"] for p in prompt_sets[neuron_key(pair["layer"], pair["neuron"])]]
    return [texts[i] for i in pair["positive"]], [texts[i] for i in pair["negative"]]


def examples_swapped(pair, prompt_sets):
    return examples_right(pair, prompt_sets)[::-1]


def examples_extra_space(pair, prompt_sets):
    texts = [p["text"] for p in prompt_sets[neuron_key(pair["layer"], pair["neuron"])]]
    return [texts[i] + " " + pair["token"] for i in pair["positive"]], [texts[i] + " " + pair["token"] for i in pair["negative"]]


def examples_wrong_neuron(pair, prompt_sets):
    texts = [p["text"] for p in next(iter(reversed(prompt_sets.values())))]
    return [texts[i % len(texts)] + pair["token"] for i in pair["positive"]], [texts[i % len(texts)] + pair["token"] for i in pair["negative"]]


def test_explainer_examples_right_passes(capsys):
    checks.check_explainer_examples(examples_right)
    assert "✓ check_explainer_examples passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (examples_no_token, "the token is missing"),
        (examples_swapped, "active and inactive are swapped"),
        (examples_extra_space, "there is an extra space"),
        (examples_wrong_neuron, r"The active examples differ: expected \['The data is for research purposes only'"),
    ],
)
def test_explainer_examples_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_explainer_examples(wrong)


# ------------------------------------------------------------------------------------------- 05 the score E


def rates(truth, predicted):
    tp = sum(t and p for t, p in zip(truth, predicted))
    fn = sum(t and not p for t, p in zip(truth, predicted))
    tn = sum(not t and not p for t, p in zip(truth, predicted))
    fp = sum(not t and p for t, p in zip(truth, predicted))
    return tp, fn, tn, fp


def score_right(truth, predicted):
    tp, fn, tn, fp = rates(truth, predicted)
    defined = [r for r in (tp / (tp + fn) if tp + fn else None, tn / (tn + fp) if tn + fp else None) if r is not None]
    return sum(defined) / len(defined)


def score_accuracy(truth, predicted):
    return sum(t == p for t, p in zip(truth, predicted)) / len(truth)


def score_precision(truth, predicted):
    tp, fn, tn, fp = rates(truth, predicted)
    return tp / (tp + fp)


def score_zero_division(truth, predicted):
    tp, fn, tn, fp = rates(truth, predicted)
    return (tp / (tp + fn) + tn / (tn + fp)) / 2


def test_explanation_score_right_passes(capsys):
    checks.check_explanation_score(score_right)
    assert "✓ check_explanation_score passed: 5 cases" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (score_accuracy, r"TP=12 FN=3 TN=2 FP=3: expected E = 0\.6000, got 0\.7000\. That is plain accuracy"),
        (score_precision, r"TP=12 FN=3 TN=2 FP=3: expected E = 0\.6000, got 0\.8000\. That is the precision TP / \(TP \+ FP\)"),
        (score_zero_division, r"divided by zero\. With no inactive prompt"),
    ],
)
def test_explanation_score_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_explanation_score(wrong)


def test_always_yes_scores_chance_not_accuracy():
    """A classifier that always says Yes on 16 active / 4 inactive prompts: accuracy 0.8, E 0.5."""

    def accuracy_when_always_yes(truth, predicted):
        return score_accuracy(truth, predicted) if all(predicted) and not all(truth) else score_right(truth, predicted)

    with pytest.raises(AssertionError, match=r"TP=16 FN=0 TN=0 FP=4: expected E = 0\.5000, got 0\.8000\. That is plain accuracy"):
        checks.check_explanation_score(accuracy_when_always_yes)


# ----------------------------------------------------------------------------------------- 06 ablation


def zero_hook(index):
    def hook(activation, hook):
        activation[index] = 0.0
        return activation

    return hook


def hook_right(layer, head_index):
    return f"blocks.{layer}.attn.hook_v", zero_hook((slice(None), slice(None), head_index))


def hook_position_axis(layer, head_index):
    return f"blocks.{layer}.attn.hook_v", zero_hook((slice(None), head_index))


def hook_pattern_indexed_like_v(layer, head_index):
    return f"blocks.{layer}.attn.hook_pattern", zero_hook((slice(None), slice(None), head_index))


def hook_wrong_head(layer, head_index):
    return hook_right(layer, head_index + 1)


def hook_pattern_right(layer, head_index):
    return f"blocks.{layer}.attn.hook_pattern", zero_hook((slice(None), head_index))


def test_ablation_hook_right_passes(tiny_model, capsys):
    checks.check_ablation_hook(hook_right, tiny_model, TEXTS, layer=0, head_index=1)
    assert "✓ check_ablation_hook passed: 3 prompts" in capsys.readouterr().out


def test_zeroing_the_right_heads_pattern_passes_with_a_note(tiny_model, capsys):
    checks.check_ablation_hook(hook_pattern_right, tiny_model, TEXTS, layer=0, head_index=1)
    assert "you used blocks.0.attn.hook_pattern: same effect here" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (hook_position_axis, r"prompt \d: probability of token .* It matches zeroing position 1 of every head"),
        (hook_pattern_indexed_like_v, r"It matches zeroing query position 1 of every head's pattern"),
        (hook_wrong_head, r"It matches ablating head 2 instead of 1"),
        (lambda layer, head_index: (f"blocks.{layer}.attn.hook_v", None), r"should return a pair \(hook name, hook function\)"),
    ],
)
def test_ablation_hook_mistakes_are_named(tiny_model, wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_ablation_hook(wrong, tiny_model, TEXTS, layer=0, head_index=1)


def test_ablation_hook_with_an_unknown_hook_name(tiny_model):
    with pytest.raises(AssertionError, match=r"no hook named 'blocks\.0\.attn\.hook_values'.*hook_v"):
        checks.check_ablation_hook(lambda l, h: ("blocks.0.attn.hook_values", hook_right(l, h)[1]), tiny_model, TEXTS, 0, 1)


def test_ablation_hook_on_prompts_shorter_than_the_head_index(tiny_model, capsys):
    """A head index past the prompt length (head 3 of a 2-token prompt) must not crash the mistake search."""
    checks.check_ablation_hook(hook_right, tiny_model, ["cat", "the mat"], layer=0, head_index=3)
    assert "✓ check_ablation_hook passed: 2 prompts" in capsys.readouterr().out


def hook_d_head_axis(layer, head_index):
    return f"blocks.{layer}.attn.hook_v", zero_hook((slice(None), slice(None), slice(None), head_index))


def hook_padding_only(layer, head_index):
    """Zeroes only the padding after the shortest prompt ("the cat": 3 tokens): no last token reads it."""
    return f"blocks.{layer}.attn.hook_v", zero_hook((2, slice(4, None)))


def hook_forgets_to_write_back(layer, head_index):
    def hook(v, hook):
        v = v.clone()
        v[:, :, head_index] = 0.0  # changes a copy and returns nothing: TransformerLens keeps the original

    return f"blocks.{layer}.attn.hook_v", hook


@pytest.mark.parametrize(
    "wrong, message",
    [
        (hook_d_head_axis, r"Your hook zeroes blocks\.0\.attn\.hook_v\[:, :, :, 1\] .*only d_head 1"),
        (hook_padding_only, r"Your hook zeroes blocks\.0\.attn\.hook_v\[2, \[4, 5, 6\], :, :\].*only batch 2 and pos "
                            r"\[4, 5, 6\], which leaves these prompts' next-token probabilities as they were"),
    ],
)
def test_a_hook_zeroing_the_wrong_entries_is_told_which(tiny_model, wrong, message):
    with pytest.raises(AssertionError, match=message) as err:
        checks.check_ablation_hook(wrong, tiny_model, TEXTS, layer=0, head_index=1)
    assert "changes nothing" not in str(err.value)


def test_a_hook_that_changes_nothing_is_told_so(tiny_model):
    with pytest.raises(AssertionError, match=r"Your hook changes nothing: modify the tensor"):
        checks.check_ablation_hook(hook_forgets_to_write_back, tiny_model, TEXTS, layer=0, head_index=1)


def attribution_every_last(model, z, last, layer, neuron):
    z_last = z[:, last]  # [batch, batch, head_layers, n_heads, d_head]: the usual slip
    return (z_last * (model.W_O[: z.shape[2]] @ model.W_in[layer][:, neuron])).sum(-1).flatten(1)


def test_head_attribution_names_the_z_colon_last_slip(tiny_model):
    with pytest.raises(AssertionError, match=r"shape \(3, 12\), expected \(3, 4\): 3 times too many .*z\[:, last\].*"
                                             r"z\[torch\.arange\(len\(last\)\), last\]"):
        checks.check_head_attribution(attribution_every_last, tiny_model, TEXTS, layer=1, neuron=5)
