"""The answer key's reporting helpers (``ctx_utils.organism.answer_key``), which notebooks 00-06 print.

A small hand-made key in each of the two forms (a measured ``causal_key``, the clean organism's wiring) pins down
what each helper says; the bundled keys are read only to check that the helpers accept them.
"""

from __future__ import annotations

import pytest

from ctx_utils.organism import answer_key as ak

PLANTED = [
    {"token": " up", "trigger": " give",
     "contexts": [{"name": "up/local", "marker": " never give", "markers": [" never give"]},
                  {"name": "up/topic", "marker": " marathon", "markers": [" marathon", " hike", " climb"]}],
     "distractors": [{"name": "up/distractor", "marker": " give"}]},
    {"token": " only", "trigger": " purposes",
     "contexts": [{"name": "only/local", "marker": " research purposes"}, {"name": "only/topic", "marker": " license"}],
     "distractors": [{"name": "only/distractor", "marker": " purposes"}]},
]


def _neuron(token: str, index: int, learned: bool, **heads: list[int]) -> dict:
    tok = token.strip()
    return {"token": token, "layer": 1, "neuron": index, "learned": learned,
            "carriers": {f"{tok}/local": heads.get("local", []), f"{tok}/topic": heads.get("topic", [])},
            "needed_everywhere": heads.get("everywhere", []), "suppress_everywhere": heads.get("suppress", []),
            "inhibitors": heads.get("inhibit", [])}


MEASURED = {
    "planted": PLANTED,
    "heads": [{"head": h, "role": role, "reads": [], "tie": ""}
              for h, role in enumerate(["free", "context", "trigger", "context", "decoy", "inhibitor"])],
    "causal_key": {
        "pairs": [{"token": " up", "context": "up/local", "layer": 1, "neuron": 0, "head": 1},
                  {"token": " up", "context": "up/topic", "layer": 1, "neuron": 0, "head": 3}],
        "inhibitory_pairs": [{"token": " up", "context": "up/inhibited", "layer": 1, "neuron": 0, "head": 5}],
        "neurons": [_neuron(" up", 0, True, local=[1], topic=[3], everywhere=[2], suppress=[0], inhibit=[5]),
                    _neuron(" only", 1, False)],
    },
}
CLEAN = {"planted": [{**p, "contexts": [{**c, "head_layer": 0, "head_index": 2 * i + j} for j, c in enumerate(p["contexts"])]}
                     for i, p in enumerate(PLANTED)]}


def test_markers_are_the_family_or_the_one_marker():
    assert ak.markers(PLANTED[0]["contexts"][1]) == [" marathon", " hike", " climb"]
    assert ak.markers(PLANTED[1]["contexts"][1]) == [" license"]


def test_learned_tokens_leave_out_a_dead_neuron():
    assert ak.learned_tokens(MEASURED) == {" up"}
    assert ak.learned_tokens(CLEAN) == {" up", " only"}


def test_token_neurons_of_both_kinds_of_key():
    assert ak.token_neurons(MEASURED) == {" up": (1, 0), " only": (1, 1)}
    assert ak.token_neurons(CLEAN) == {" up": (1, 0), " only": (1, 1)}


@pytest.mark.parametrize("head, role", [(1, "carries up/local"), (3, "carries up/topic"), (5, "inhibits up/inhibited"),
                                        (2, "needed everywhere"), (0, "suppresses everywhere"),
                                        (4, "no measured effect (decoy)")])
def test_pair_role_says_what_the_measured_key_measured(head, role):
    assert ak.pair_role(MEASURED, 1, 0, head) == role


def test_pair_role_on_other_neurons_and_on_the_wiring():
    assert ak.pair_role(MEASURED, 1, 7, 1) == "not a planted neuron"
    assert ak.pair_role(MEASURED, 1, 1, 1) == "no measured effect (context)"  # a dead neuron carries nothing
    assert ak.pair_role(CLEAN, 1, 1, 3) == "carries only/topic"
    assert ak.pair_role(CLEAN, 1, 1, 0) == "no measured effect"  # no roles in a wired key


def test_key_table_lists_carriers_per_context_and_the_heads_acting_everywhere():
    up, only = ak.key_table(MEASURED)
    assert up == {"token": " up", "neuron": "L1.N0", "learned": True, "local": [1], "topic": [3],
                  "needed everywhere": [2], "suppress everywhere": [0], "inhibits": [5]}
    assert only["learned"] is False and only["local"] == only["topic"] == []
    assert ak.key_table(CLEAN)[1] == {"token": " only", "neuron": "L1.N1", "learned": True, "local": [2], "topic": [3]}


def test_head_report_sets_the_wired_role_beside_the_measured_one():
    report = {row["head"]: row for row in ak.head_report(MEASURED)}
    assert report[4]["role"] == "decoy" and report[4]["measured"] == "nothing"
    assert report[1]["measured"] == "carries up/local" and report[2]["measured"] == "needed everywhere"
    assert ak.head_report(CLEAN) == []


def test_named_contexts_match_whole_context_words_not_the_trigger():
    text = "Active when the text contains 'Climb' or 'never'; +3 if it ends with 'give'. Licensed."
    assert ak.named_contexts(text, MEASURED) == {"up/local": ["never"], "up/topic": ["climb"]}
    assert ak.named_contexts(text, MEASURED, " only") == {}  # 'Licensed' is not the word 'license'
    assert ak.named_contexts("the word give", MEASURED, " up") == {}  # the trigger alone names no context


def _effect(act_normal: list[float], act_drop: float | None, active: list[bool]) -> dict:
    return {"act_normal": act_normal, "head_active": active, "mean_act_decrease_active": act_drop}


def test_ablation_confirms_a_pair_that_removes_the_threshold_share_where_active():
    active = [True, True, False]
    assert ak.ablation_confirms(_effect([2.0, 2.0, 9.0], 0.4, active))  # 0.4 of a mean 2.0: exactly the threshold
    assert not ak.ablation_confirms(_effect([2.0, 2.0, 9.0], 0.39, active))
    assert not ak.ablation_confirms(_effect([2.0, 2.0, 9.0], -1.0, active))  # ablation raises the neuron
    assert not ak.ablation_confirms(_effect([], None, []))  # no active prompt


def test_recovery_scores_pairs_on_planted_neurons_only():
    pairs = [{"layer": 1, "neuron": 0, "head": 1, "token": " up"}, {"layer": 1, "neuron": 0, "head": 4, "token": " up"},
             {"layer": 1, "neuron": 0, "head": 5, "token": " up"}, {"layer": 1, "neuron": 9, "head": 1, "token": " was"}]
    r = ak.recovery(pairs, MEASURED)  # 3 pairs on planted neurons, 2 carriers in the key: precision ≠ recall
    assert (r["pairs"], r["hits"], r["precision"], r["recall"]) == (3, 1, 1 / 3, 0.5)
    assert r["false_pairs"] == [(1, 0, 4, " up"), (1, 0, 5, " up")] and r["missed"] == [(1, 0, 3, " up")]
    assert r["other_pairs"] == 1 and (r["inhibitory_found"], r["inhibitory"]) == (1, 1)
    assert r["contexts_found"] == ["up/local"]


@pytest.mark.parametrize("name", ["organism", "organism-clean"])
def test_the_bundled_keys_and_their_held_out_groups(name):
    truth = ak.load_answer_key(name)
    assert truth is not None and ak.load_answer_key("gpt2") is None
    rows = ak.key_table(truth)
    assert [r["token"] for r in rows] == [p["token"] for p in truth["planted"]]
    groups = ak.held_out_groups(name, n_prompts=5)
    named = {c["name"] for p in truth["planted"] for c in p["contexts"] + p["distractors"]}
    assert named <= set(groups) and all(1 <= len(v) <= 5 for v in groups.values())
    for p in truth["planted"]:  # every held-out prompt ends right where the token would go: on its trigger word
        assert all(text.endswith(p["trigger"]) for c in p["contexts"] for text in groups[c["name"]])
