"""The exercise checks: a right answer passes, and typical wrong answers fail with a message naming the mistake."""

import pytest
import torch

from ctx_utils import activations
from ctx_utils.classroom import checks
from ctx_utils.tokens import neuron_label, tokenize

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


def test_truncation_says_so_when_the_real_document_gives_no_prompt(tiny_model, capsys):
    """A neuron that keeps the share on no suffix short enough to be a prompt: the pass line says no prompt, not
    "the None-token prompt"."""
    checks.check_truncation(shortest_right, tiny_model, "the cat sat on the mat for research purposes", ratio=100.0)
    out = capsys.readouterr().out
    assert "no prompt from the real document: no suffix under 100 tokens keeps more than 10000%" in out
    assert "prompts.truncate agrees" in out and "None-token" not in out


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
    real = activations.last_token_activations

    def counting(model, seqs, layer, neuron, batch_size=64):
        measured.append([len(s) for s in seqs])
        return real(model, seqs, layer, neuron, batch_size)

    def rule(suffix_acts, target, ratio=0.8):
        seen.append(len(suffix_acts))
        return shortest_right(suffix_acts, target, ratio)

    monkeypatch.setattr(checks.activations, "last_token_activations", counting)
    position = len(tokenize(tiny_model, [text])[0]) - 1
    assert position > 12
    checks.check_truncation(rule, tiny_model, text, position=position, max_tokens=8)  # the neuron firing most there
    assert seen[-1] == 7  # suffixes of 1 … 7 tokens: prompts of < 8 tokens
    assert max(max(lengths) for lengths in measured) <= 8 + 1  # BOS + at most 7 document tokens (re-tokenised)


def test_truncation_stops_measuring_a_chunk_past_the_first_passing_suffix(tiny_model):
    """The real document's suffixes are measured 16 lengths at a time, up to one chunk past the first that passes:
    each value is the one measuring every suffix gives, and the shortest passing suffix is the same."""
    text = " ".join(["the cat sat on the mat for research purposes only as early"] * 8)
    doc = tokenize(tiny_model, [text], warn_long=False)[0]
    position, layer = len(doc) - 1, 1
    neuron = int(activations.mlp_post(tiny_model, [doc], [layer])[0][layer][0, position].argmax())
    every = checks._suffix_activations(tiny_model, doc, layer, neuron, position, 100, float("inf"))  # nothing passes
    assert len(every) == min(position, 99)
    threshold = float(every[20])  # the first suffix above this is the shortest that passes
    first = next(n for n, a in enumerate(every.tolist()) if a > threshold)
    some = checks._suffix_activations(tiny_model, doc, layer, neuron, position, 100, threshold)
    assert len(some) == min((first // 16 + 2) * 16, len(every))  # to the end of the chunk after the first pass
    assert len(some) < len(every), "premise: the first passing suffix is short"
    torch.testing.assert_close(some, every[: len(some)], atol=1e-5, rtol=0)


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
    texts = [p["text"] for p in prompt_sets[neuron_label(pair["layer"], pair["neuron"])]]
    return [texts[i] + pair["token"] for i in pair["positive"]], [texts[i] + pair["token"] for i in pair["negative"]]


def examples_no_token(pair, prompt_sets):
    texts = [p["text"] for p in prompt_sets[neuron_label(pair["layer"], pair["neuron"])]]
    return [texts[i] for i in pair["positive"]], [texts[i] for i in pair["negative"]]


def examples_swapped(pair, prompt_sets):
    return examples_right(pair, prompt_sets)[::-1]


def examples_extra_space(pair, prompt_sets):
    texts = [p["text"] for p in prompt_sets[neuron_label(pair["layer"], pair["neuron"])]]
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


# ---------------------------------------------------------------------------- yours, or the kit's stand-in


def test_yours_or_kit_says_which_ran(capsys):
    def kit_double(x):
        return 2 * x

    def double(x):
        raise NotImplementedError("Your code here")

    assert checks.yours_or_kit(double, kit_double, 3) == 6
    assert "your double is not written yet, so the kit's " in capsys.readouterr().out

    def double(x):  # noqa: F811 - the learner writes it
        return x + x + 1

    assert checks.yours_or_kit(double, kit_double, 3) == 7
    assert "✓ your double ran here (not the kit's" in capsys.readouterr().out
    assert checks.yours_or_kit(double, kit_double, call=lambda fn: [fn(x) for x in (1, 2)]) == [3, 5]


# ------------------------------------------------------------------------------- 01 the activation check


def fires_right(max_acts, min_share):
    strongest = max(float(a.max()) for a in max_acts.values())
    return {layer: acts > min_share * strongest for layer, acts in max_acts.items()}


def fires_greater_equal(max_acts, min_share):
    strongest = max(float(a.max()) for a in max_acts.values())
    return {layer: acts >= min_share * strongest for layer, acts in max_acts.items()}


def fires_per_layer(max_acts, min_share):
    return {layer: acts > min_share * acts.max() for layer, acts in max_acts.items()}


def fires_share_alone(max_acts, min_share):
    return {layer: acts > min_share for layer, acts in max_acts.items()}


ACTIVITY = {2: torch.tensor([0.5, 3.0, 0.2, 0.31]), 3: torch.tensor([0.0, 0.29, 1.0, 0.1])}


def test_firing_right_passes(capsys):
    checks.check_firing(fires_right, ACTIVITY, 0.1)
    assert "✓ check_firing passed: 2 hand-made cases, and on this notebook's activity 4 of 8" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (fires_greater_equal, r"layer 2, neuron 1: largest activation 1, threshold 1 .*expected silent, got fires\. That is `>=`"),
        (fires_per_layer, r"layer 1, neuron 1: .*expected silent, got fires\. That scales each layer by its own strongest"),
        (fires_share_alone, r"layer 1, neuron 1: .*That compares with min_share alone"),
        (lambda acts, share: [a > share for a in acts.values()], r"should return a dict with one boolean tensor per layer"),
    ],
)
def test_firing_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_firing(wrong, ACTIVITY, 0.1)


# ------------------------------------------------------------------------- 03 the active-head rules, the band


def active_right(attr, rule):
    wrote = attr.abs() > 1e-6 * attr.abs().amax(dim=1, keepdim=True)
    if rule == "top3":
        top = attr.topk(min(3, attr.shape[1]), dim=1).indices
        return torch.zeros_like(attr, dtype=torch.bool).scatter(1, top, True) & wrote
    return (attr > attr.mean(dim=1, keepdim=True) + 2 * attr.std(dim=1, keepdim=True)) & wrote


def active_biased_std(attr, rule):
    if rule == "top3":
        return active_right(attr, rule)
    wrote = attr.abs() > 1e-6 * attr.abs().amax(dim=1, keepdim=True)
    return (attr > attr.mean(dim=1, keepdim=True) + 2 * attr.std(dim=1, unbiased=False, keepdim=True)) & wrote


def active_no_silence_rule(attr, rule):
    if rule == "top3":
        return torch.zeros_like(attr, dtype=torch.bool).scatter(1, attr.topk(3, dim=1).indices, True)
    return active_right(attr, rule)


def active_2sigma_without_silence_rule(attr, rule):
    if rule == "top3":
        return active_right(attr, rule)
    return attr > attr.mean(dim=1, keepdim=True) + 2 * attr.std(dim=1, keepdim=True)


def active_abs(attr, rule):
    return active_right(attr.abs(), rule)


def active_over_prompts(attr, rule):
    return active_right(attr.T, rule).T if rule == "2sigma" else active_right(attr, rule)


ATTR = torch.tensor([[0.1, 1.5, -0.2, 0.3, 0.0, 0.2], [0.4, -0.1, 0.9, 0.2, 0.1, -0.3], [0.2, 0.1, 0.0, 1.1, -0.4, 0.3]])


def test_active_heads_right_passes(capsys):
    checks.check_active_heads(active_right, ATTR)
    assert "✓ check_active_heads passed: both rules" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (active_biased_std, r"rule '2sigma', prompt 3, head 1: attribution 2\.5 \(mean \+ 2σ = 2\.616\): expected inactive, got active\. It matches the biased std"),
        (active_no_silence_rule, r"rule 'top3', prompt 1, head \d: attribution 0 .*expected inactive, got active\. It matches top-3 without the rule for heads that wrote nothing"),
        (active_2sigma_without_silence_rule, r"rule '2sigma', prompt 2, head 9: attribution 1e-12 .* It matches mean \+ 2σ without the rule"),
        (active_abs, r"rule 'top3', prompt 2, head \d: .*It matches the three largest \|attribution\|"),
        (active_over_prompts, r"rule '2sigma', .*It matches mean \+ 2σ over the prompts \(dim=0\)"),
    ],
)
def test_active_heads_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_active_heads(wrong, ATTR)


def band_right(active, band):
    fractions = [count / active.shape[0] for count in active.sum(dim=0).tolist()]
    keep = (lambda f: 0.25 <= f <= 0.75) if band == "25-75" else (lambda f: f > 0.25)
    return [(head, f) for head, f in enumerate(fractions) if keep(f)]


def band_exclusive(active, band):
    return [(h, f) for h, f in band_right(active, band) if band != "25-75" or 0.25 < f < 0.75]


def band_ignores_the_choice(active, band):
    return band_right(active, "25-75")


def band_greater_equal(active, band):
    fractions = [count / active.shape[0] for count in active.sum(dim=0).tolist()]
    return band_right(active, band) if band == "25-75" else [(h, f) for h, f in enumerate(fractions) if f >= 0.25]


def band_percent(active, band):
    return [(h, 100 * f) for h, f in band_right(active, band)]


def band_over_heads(active, band):
    fractions = active.float().mean(dim=1).tolist()
    return [(h, f) for h, f in enumerate(fractions) if 0.25 <= f <= 0.75]


def test_band_right_passes(capsys):
    checks.check_band(band_right, active_right(ATTR, "top3"))
    assert "✓ check_band passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (band_exclusive, r"band '25-75', 20 prompts × 6 heads: expected \[\(0, 0\.25\), \(1, 0\.75\), \(5, 0\.5\)\], got \[\(5, 0\.5\)\]\. That leaves out the edges"),
        (band_ignores_the_choice, r"band '>25', .*That is the 25-75 band: '>25' has no upper bound"),
        (band_greater_equal, r"band '>25', .*That keeps a head active on exactly 25 %"),
        (band_percent, r"got \[\(0, 25\), \(1, 75\), \(5, 50\)\]\. Those are percentages"),
        (band_over_heads, r"band '25-75', 20 prompts × 6 heads: expected .*A head index past the 6 heads"),
    ],
)
def test_band_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_band(wrong, active_right(ATTR, "top3"))


# ------------------------------------------------------------------------------ 04 the explainer's prompt


def prompt_right(token, active, inactive, variant):
    from ctx_utils import explain

    head = (f'This attention head in particular helps to predict that the next token is "{token}", '
            "but it is only active in some documents and not others. ")
    blocks = "".join(f'Examples where the attention head is {kind}: """\n*' + "\n*".join(examples) + '\n"""\n'
                     for kind, examples in (("active", active), ("inactive", inactive)))
    return explain.CONTEXT + head + explain.INSTRUCTION + blocks + explain.EXPLAIN_ENDING[variant]


def prompt_star_space(token, active, inactive, variant):
    return prompt_right(token, active, inactive, variant).replace("\n*", "\n* ")


def prompt_no_bare_star(token, active, inactive, variant):
    return prompt_right(token, active, inactive, variant).replace('"""\n*\n"""', '"""\n"""')


def prompt_swapped(token, active, inactive, variant):
    return prompt_right(token, inactive, active, variant)


def prompt_stripped_token(token, active, inactive, variant):
    return prompt_right(token.strip(), active, inactive, variant)


def prompt_no_quotes(token, active, inactive, variant):
    return prompt_right(token, active, inactive, variant).replace(f'"{token}"', token)


def test_explainer_prompt_right_passes(capsys):
    checks.check_explainer_prompt(prompt_right, " as", ["so far as"], ["as far as"], "oct2023")
    assert "✓ check_explainer_prompt passed: 3 prompts equal explain.explanation_prompt byte for byte" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (prompt_star_space, r"token ' only', 2 active and 1 inactive examples, oct2023: your prompt is not the paper's; "
                            r"they differ from character \d+ \(line 4\).*\* The data is for.*Each example starts with '\* '"),
        (prompt_no_bare_star, r"token ' ahead', 2 active and 0 inactive examples, feb2024: .*An empty list of examples still gets one bare"),
        (prompt_swapped, r"Active and inactive are swapped"),
        (prompt_stripped_token, r"The token lost its leading space"),
        (prompt_no_quotes, r"The token is not in double quotes"),
        (lambda token, active, inactive, variant: prompt_right(token, active, inactive, "feb2024"), r"That ends as the feb2024 variant does"),
    ],
)
def test_explainer_prompt_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_explainer_prompt(wrong)


# ------------------------------------------------------------------- 05 judging: the classifier's answer


def answer_right(text):
    return {"yes": True, "no": False}.get(text.strip().lower())


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda t: True if "yes" in t.lower() else False if "no" in t.lower() else None,
         r"answer 'No\.': expected None, got False\. That finds 'yes' or 'no' \*inside\* the answer"),
        (lambda t: True if t.strip().lower().startswith("y") else False if t.strip().lower().startswith("n") else None,
         r"answer 'No\.': expected None, got False\. That reads the first letter"),
        (lambda t: answer_right(t) is True, r"answer 'No\.': expected None, got False\. That counts an answer that is neither"),
        (lambda t: {"Yes": True, "No": False}.get(t.strip()), r"answer ' yes\\n': expected True, got None\. That is case-sensitive"),
        (lambda t: {"yes": True, "no": False}.get(t.lower()), r"answer ' yes\\n': expected True, got None\. That does not strip"),
    ],
)
def test_parse_answer_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_parse_answer(wrong)


def test_parse_answer_right_passes(capsys):
    checks.check_parse_answer(answer_right)
    assert "✓ check_parse_answer passed: 11 answers" in capsys.readouterr().out


# --------------------------------------------------------------------------------- 05 the random baseline


def baseline_right(d_mlp, layers, per_layer, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(layer, n) for layer in layers for n in torch.randperm(d_mlp, generator=generator)[:per_layer].sort().values.tolist()]


def baseline_other_valid_draw(d_mlp, layers, per_layer, seed):
    generator = torch.Generator().manual_seed(seed + 1)
    return [(layer, n) for layer in layers for n in sorted(torch.randperm(d_mlp, generator=generator)[:per_layer].tolist())]


def baseline_with_replacement(d_mlp, layers, per_layer, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(layer, n) for layer in layers for n in torch.randint(0, 3, (per_layer,), generator=generator).tolist()]


def baseline_reseeded(d_mlp, layers, per_layer, seed):
    return [pair for layer in layers for pair in baseline_right(d_mlp, [layer], per_layer, seed)]


def baseline_unseeded(d_mlp, layers, per_layer, seed):
    return [(layer, n) for layer in layers for n in sorted(torch.randperm(d_mlp)[:per_layer].tolist())]


def baseline_unsorted(d_mlp, layers, per_layer, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(layer, n) for layer in layers for n in torch.randperm(d_mlp, generator=generator)[:per_layer].sort(descending=True).values.tolist()]


def test_random_baseline_right_passes(tiny_model, capsys):
    checks.check_random_baseline(baseline_right, tiny_model, [0, 1], 5, seed=0)
    out = capsys.readouterr().out
    assert "✓ check_random_baseline passed: 5 distinct neurons in each of layers [0, 1]" in out and "not the kit's draw" not in out


def test_a_valid_random_draw_that_is_not_the_kits_passes_with_a_note(tiny_model, capsys):
    checks.check_random_baseline(baseline_other_valid_draw, tiny_model, [0, 1], 5, seed=0)
    assert "It is not the kit's draw (neurons.random_neurons" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (baseline_with_replacement, r"layer 0 has a neuron twice: draw without replacement"),
        (baseline_reseeded, r"Every layer got the same neurons: seed one generator once"),
        (baseline_unseeded, r"Two calls with the same seed drew different neurons"),
        (baseline_unsorted, r"The kit's neurons, in another order"),
        (lambda d_mlp, layers, per_layer, seed: [(l, n) for l in layers for n in range(per_layer)], r"the first 5 neurons are not a random draw"),
    ],
)
def test_random_baseline_mistakes_are_named(tiny_model, wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_random_baseline(wrong, tiny_model, [0, 1], 5, seed=0)


def test_random_baseline_refuses_the_most_congruent_neurons(tiny_model):
    from ctx_utils import neurons

    def most_congruent(d_mlp, layers, per_layer, seed):
        return [(l, n) for l in layers for n in sorted(neurons.congruence(tiny_model, l)[0].topk(per_layer).indices.tolist())]

    with pytest.raises(AssertionError, match=r"layer 0: these are the layer's most congruent neurons"):
        checks.check_random_baseline(most_congruent, tiny_model, [0, 1], 5, seed=0)


# --------------------------------------------------------------------------- 06 the KS test on per-pair means


def pair_means(effects, reduce=None, empty=None):
    import numpy as np

    reduce = reduce or np.mean
    active, inactive = [], []
    for e in effects:
        drops = np.asarray(e["prob_normal"]) - np.asarray(e["prob_ablated"])
        on = np.asarray(e["head_active"], dtype=bool)
        active.append(float(reduce(drops[on])) if on.any() else empty)
        inactive.append(float(reduce(drops[~on])) if (~on).any() else empty)
    return [a for a in active if a is not None], [i for i in inactive if i is not None]


def ks_right(effects):
    from scipy import stats

    return tuple(stats.ks_2samp(*pair_means(effects)))[:2]


def ks_pooled(effects):
    from scipy import stats

    drops = [(n - a, on) for e in effects for n, a, on in zip(e["prob_normal"], e["prob_ablated"], e["head_active"])]
    return tuple(stats.ks_2samp([d for d, on in drops if on], [d for d, on in drops if not on]))[:2]


def ks_empty_as_zero(effects):
    from scipy import stats

    return tuple(stats.ks_2samp(*pair_means(effects, empty=0.0)))[:2]


def ks_median(effects):
    import numpy as np
    from scipy import stats

    return tuple(stats.ks_2samp(*pair_means(effects, reduce=np.median)))[:2]


def ks_ttest(effects):
    from scipy import stats

    result = stats.ttest_ind(*pair_means(effects))
    return result.statistic, result.pvalue


def test_pair_ks_right_passes(capsys):
    checks.check_pair_ks(ks_right, checks.ks_effects())
    assert "✓ check_pair_ks passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    "wrong, message",
    [
        (ks_pooled, r"7 pairs \(6 with active prompts, 6 with inactive ones\): expected KS 0\.5000 \(p = 0\.474\), got 0\.2727 .*That pools the prompts"),
        (ks_empty_as_zero, r"That counts a pair with no prompt in a group as a mean drop of 0"),
        (ks_median, r"That uses each pair's median drop"),
        (ks_ttest, r"That is a t-test \(scipy\.stats\.ttest_ind\)"),
    ],
)
def test_pair_ks_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_pair_ks(wrong, checks.ks_effects())


@pytest.mark.parametrize("check, args", [
    (checks.check_firing, (ACTIVITY,)), (checks.check_active_heads, (ATTR,)), (checks.check_band, (ATTR > 0,)),
    (checks.check_explainer_prompt, ()), (checks.check_parse_answer, ()), (checks.check_pair_ks, ([],)),
])
def test_every_new_check_lets_an_unwritten_exercise_through(check, args, capsys):
    def stub(*args):
        raise NotImplementedError("Your code here")

    check(stub, *args)
    assert "is not written yet: replace `raise NotImplementedError`" in capsys.readouterr().out


def test_random_baseline_of_every_neuron_passes(tiny_model, capsys):
    """per_layer = d_mlp draws every neuron: it is the first and the most congruent neurons, and still right."""
    d_mlp = tiny_model.cfg.d_mlp
    checks.check_random_baseline(baseline_right, tiny_model, [0, 1], d_mlp, seed=0)
    assert f"✓ check_random_baseline passed: {d_mlp} distinct neurons" in capsys.readouterr().out
