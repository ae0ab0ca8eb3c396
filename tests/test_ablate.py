"""Step 6: head ablation — the hook is the paper's, batching changes nothing, the statistics are honest."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from ctx_utils import ablate

PROMPTS = ["the cat sat on the mat", "for research", "as early as such", "the mat", "cat cat cat sat on"]


def test_zeroing_values_equals_zeroing_z_and_changes_the_output(tiny_model):
    tokens = tiny_model.to_tokens(PROMPTS[0])
    normal = tiny_model(tokens)

    def zero_z(z, hook):  # z: [batch, pos, n_heads, d_head]
        z[:, :, 2, :] = 0.0
        return z

    by_v = tiny_model.run_with_hooks(tokens, fwd_hooks=ablate.zero_value_hooks([(0, 2)]))
    by_z = tiny_model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero_z)])
    torch.testing.assert_close(by_v, by_z, atol=1e-5, rtol=0)
    assert (by_v - normal).abs().max() > 1e-3, "ablating a head should change the logits"


def test_batched_equals_one_prompt_at_a_time(tiny_model):
    batched = ablate.token_probabilities(tiny_model, PROMPTS, " sat", [(1, 0)], batch_size=3)
    alone = torch.cat([ablate.token_probabilities(tiny_model, [p], " sat", [(1, 0)]) for p in PROMPTS])
    torch.testing.assert_close(batched, alone, atol=1e-6, rtol=1e-5)
    probs = ablate.next_token_probs(tiny_model, PROMPTS, batch_size=2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(PROMPTS)))
    normal = ablate.token_probabilities(tiny_model, PROMPTS, " sat")
    assert not torch.allclose(batched, normal), "ablation had no effect"


def neuron_activations(model, texts, layer, neuron, ablate_heads=()):
    """The neuron at each prompt's last token with ``ablate_heads`` zeroed (step 6's readout without the logits)."""
    return ablate.last_token_readout(model, texts, ablate_heads, (layer, neuron), logits=False)["activation"]


def test_neuron_activation_only_moves_when_an_earlier_head_is_ablated(tiny_model):
    normal = neuron_activations(tiny_model, PROMPTS, layer=0, neuron=3)
    later_head = neuron_activations(tiny_model, PROMPTS, layer=0, neuron=3, ablate_heads=[(1, 0)])
    same_block = neuron_activations(tiny_model, PROMPTS, layer=0, neuron=3, ablate_heads=[(0, 0), (0, 1)])
    torch.testing.assert_close(normal, later_head)  # a layer-1 head cannot reach a layer-0 neuron
    assert (normal - same_block).abs().max() > 1e-4, "the layer-0 heads feed the layer-0 MLP"


def test_ablation_effects_groups_prompts_by_head_activity(tiny_model):
    pairs = [{"layer": 1, "neuron": 5, "token": " mat", "head": 1, "head_layer": 0, "head_index": 1},
             {"layer": 1, "neuron": 5, "token": " mat", "head": 2, "head_layer": 0, "head_index": 2},
             {"layer": 1, "neuron": 6, "token": " mat", "head": 2, "head_layer": 0, "head_index": 2}]
    prompts = {"1.5": [{"text": t, "activation": 1.0} for t in PROMPTS]}
    activity = {"1.5": torch.tensor([[0, 1, 1, 0]] * 2 + [[0, 0, 1, 0]] * 3, dtype=torch.bool)}
    first, second, no_prompts = ablate.ablation_effects(tiny_model, pairs, prompts, activity)

    decrease = np.subtract(first["prob_normal"], first["prob_ablated"])
    assert first["head_active"] == [True, True, False, False, False]
    assert (first["n_active"], first["n_inactive"]) == (2, 3)
    assert first["mean_decrease_active"] == pytest.approx(decrease[:2].mean())
    assert first["mean_decrease_inactive"] == pytest.approx(decrease[2:].mean())
    assert second["mean_decrease_inactive"] is None, "an empty group is None, as the authors' NaN"
    expected = ablate.token_probabilities(tiny_model, PROMPTS, " mat", [(0, 1)])
    assert first["prob_ablated"] == pytest.approx(expected.tolist())
    act_drop = np.subtract(first["act_normal"], first["act_ablated"])
    assert first["mean_act_decrease_active"] == pytest.approx(act_drop[:2].mean())
    assert first["act_normal"] == second["act_normal"], "the unablated run is shared by a neuron's pairs"
    assert (no_prompts["n_active"], no_prompts["mean_decrease_active"], no_prompts["act_normal"]) == (0, None, [])


def test_ks_test_drops_missing_means():
    active = [0.02, None, 0.03, float("nan"), 0.05, 0.04]
    inactive = [0.0, 0.001, None, -0.002]
    result = ablate.ks_test(active, inactive)
    expected = stats.ks_2samp([0.02, 0.03, 0.05, 0.04], [0.0, 0.001, -0.002])
    assert result["statistic"] == pytest.approx(expected.statistic)
    assert result["pvalue"] == pytest.approx(expected.pvalue)
    assert (result["n_active"], result["n_inactive"]) == (4, 3)
    with pytest.raises(ValueError, match="both groups"):
        ablate.ks_test([None, math.nan], [0.1])


def test_box_plot_has_both_groups_and_the_paper_scale():
    rows = [{"mean_decrease_active": 0.03, "mean_decrease_inactive": 0.0},
            {"mean_decrease_active": 0.01, "mean_decrease_inactive": None}]
    fig = ablate.ablation_box({"tiny": rows})
    assert [len(trace.y) for trace in fig.data] == [2, 1]
    assert tuple(fig.layout.yaxis.range) == ablate.PAPER_Y_RANGE
    with pytest.raises(ValueError, match="measure"):
        ablate.ablation_box(rows, measure="logit")


@pytest.mark.parametrize("heads", [[(2, 0)], [(0, 4)], [(0, -1)], [3], [(0, 1.5)], [(0, 1, 2)]])
def test_unknown_head_is_a_clear_error(tiny_model, heads):
    with pytest.raises(ValueError, match="(does not exist|a \\(layer, head_index\\) pair of integers)"):
        ablate.token_probabilities(tiny_model, PROMPTS, " sat", heads)


def test_bad_prompts_and_tokens_are_clear_errors(tiny_model):
    with pytest.raises(ValueError, match="No prompts"):
        ablate.token_probabilities(tiny_model, [], " sat")
    with pytest.raises(TypeError, match="not one string"):
        ablate.token_probabilities(tiny_model, "the cat", " sat")
    with pytest.raises(ValueError, match="empty"):
        ablate.token_probabilities(tiny_model, ["the cat", ""], " sat")
    with pytest.raises(ValueError, match="token"):
        ablate.token_probabilities(tiny_model, PROMPTS, "")
    with pytest.raises(ValueError, match="Neuron 10000 is out of range"):
        neuron_activations(tiny_model, PROMPTS, layer=0, neuron=10_000)
    pair = {"layer": 1, "neuron": 5, "token": " mat", "head": 1, "head_layer": 0, "head_index": 1}
    with pytest.raises(ValueError, match="same test prompts"):
        ablate.ablation_effects(tiny_model, [pair], {"1.5": PROMPTS}, {"1.5": torch.ones(2, 4, dtype=torch.bool)})


def test_activity_matrix_matches_step_3_ground_truth(tiny_model):
    from ctx_utils.heads import active_heads, head_attributions

    active = active_heads(head_attributions(tiny_model, PROMPTS, 1, 5), "top3")  # 2sigma: no head of 4 can pass
    assert active.any() and not active.all()
    held = {"prompts": {"1.5": PROMPTS}, "active": {"1.5": [row.nonzero().flatten().tolist() for row in active]}}
    activity = ablate.activity_matrix(tiny_model, held)
    assert activity["1.5"].shape == (len(PROMPTS), 4)
    assert torch.equal(activity["1.5"], active), "held_out.json's lists of active heads must give back step 3's matrix"


def test_top1_accuracy_counts_argmax_hits(tiny_model):
    probs = ablate.next_token_probs(tiny_model, PROMPTS[:2])
    target = int(probs[0].argmax())  # the model's own top-1 after the first prompt: a hit by construction
    token = tiny_model.tokenizer.decode([target])
    groups = {"a": PROMPTS[:2], "b": PROMPTS[2:]}
    rows = ablate.top1_accuracy(tiny_model, groups, token, [(0, 1)])
    assert [(r["group"], r["ablated"]) for r in rows] == [("a", "none"), ("a", "L0.H1"), ("b", "none"), ("b", "L0.H1")]
    assert rows[0]["top1_accuracy"] == float((probs.argmax(-1) == target).float().mean()) >= 0.5
    assert rows[0]["mean_prob"] == pytest.approx(float(probs[:, target].mean()))


ORGANISM_DIR = Path(__file__).resolve().parents[1] / "data" / "organism-clean"  # one wired head per context


@pytest.fixture(scope="module")
def organism():
    if not (ORGANISM_DIR / "config.json").exists():
        pytest.skip("the organism is not built yet: run `python -m ctx_utils.organism.train` --out data/organism-clean` to create it")
    from ctx_utils.models import load_model

    return load_model(str(ORGANISM_DIR), device="cpu")


def test_ablating_a_context_head_removes_only_that_context(organism):
    """Attribution picks each planted context's head; ablation must then remove that context, and only it."""
    from ctx_utils.heads import head_attributions

    truth = json.loads((ORGANISM_DIR / "ground_truth.json").read_text())
    contexts = {c["name"]: (p["token"], c["examples"]) for p in truth["planted"] for c in p["contexts"]}
    layer = organism.cfg.n_layers - 1
    for planted in truth["planted"]:
        token = planted["token"]
        direct = organism.W_out[layer] @ organism.W_U[:, ablate.token_id(organism, token)]  # [d_mlp]
        neuron = int(direct.argmax())  # the layer's neuron that writes the token most
        for context in planted["contexts"]:
            attr = head_attributions(organism, context["examples"], layer, neuron)  # [n_examples, layer * n_heads]
            head = divmod(int(attr.mean(0).argmax()), organism.cfg.n_heads)
            assert head == (context["head_layer"], context["head_index"]), f"{context['name']}: attribution picked {head}"
            for name, (other_token, examples) in contexts.items():
                rows = ablate.top1_accuracy(organism, {name: examples}, other_token, [head])
                before, after = rows[0]["top1_accuracy"], rows[1]["top1_accuracy"]
                assert before >= 0.8, f"the organism should predict {other_token!r} in {name}"
                if name == context["name"]:
                    assert after <= 0.4, f"ablating L{head[0]}.H{head[1]} should remove context {name} ({after:.2f})"
                else:
                    hurt = f"ablating {context['name']}'s head L{head[0]}.H{head[1]} hurt {name} ({after:.2f})"
                    assert after >= 0.8, hurt


# ------------------------------------------------------------ issue 11, item 4: one token, or its id


def test_a_string_that_is_not_one_token_is_refused(organism):
    """" magnifique" became <unk>, " give up" silently " give": both measured another token's probability."""
    with pytest.raises(ValueError) as unknown:
        ablate.token_id(organism, " magnifique")
    assert str(unknown.value).startswith("' magnifique' is not in this model's vocabulary: the tokenizer turns it into <unk> (id 1).")
    with pytest.raises(ValueError) as several:
        ablate.token_id(organism, " give up")
    assert str(several.value).startswith("' give up' is 2 tokens for this model ([' give', ' up']), not one")
    with pytest.raises(ValueError, match="is 2 tokens"):
        ablate.top1_accuracy(organism, {"a": ["we will"]}, " give up", [(0, 0)])
    assert ablate.token_id(organism, " give") == ablate.token_id(organism, np.int64(ablate.token_id(organism, " give")))


def test_a_token_id_is_checked_and_preferred(tiny_model):
    sat = ablate.token_id(tiny_model, " sat")
    assert ablate.token_id(tiny_model, sat) == sat and ablate.token_id(tiny_model, torch.tensor(sat)) == sat
    torch.testing.assert_close(ablate.token_probabilities(tiny_model, PROMPTS, sat), ablate.token_probabilities(tiny_model, PROMPTS, " sat"))
    with pytest.raises(ValueError, match=r"Token id 99 is out of range: the vocabulary has ids 0 to 24"):
        ablate.token_id(tiny_model, 99)
    with pytest.raises(TypeError, match="A token id must be a whole number"):
        ablate.token_id(tiny_model, 1.0)
    with pytest.raises(ValueError, match="not in this model's vocabulary"):
        ablate.token_id(tiny_model, " dog")  # the tiny tokenizer's unknown token is <|endoftext|>
    # a pair with step 1's token_id is read by the id: its token string is never encoded again
    pair = {"layer": 1, "neuron": 5, "token": " not-a-token", "token_id": sat, "head": 1, "head_layer": 0, "head_index": 1}
    (row,) = ablate.ablation_effects(tiny_model, [pair], {"1.5": PROMPTS}, {"1.5": torch.ones(len(PROMPTS), 4, dtype=torch.bool)})
    assert row["prob_normal"] == pytest.approx(ablate.token_probabilities(tiny_model, PROMPTS, " sat").tolist())
    rows = ablate.top1_accuracy(tiny_model, {"a": PROMPTS}, sat, [(0, 1)])
    assert rows == ablate.top1_accuracy(tiny_model, {"a": PROMPTS}, " sat", [(0, 1)])
