"""ctx_utils: the logic behind the context look-ups teaching kit.

One module per step of Neo, Cohen & Barez (2024), "Interpreting Context Look-ups in Transformers":
models / corpus (inputs) → neurons (step 1) → prompts (step 2) → heads (step 3) → explain (step 4)
→ score (step 5) → ablate (step 6); steps 1 and 2 read MLP activations through activations (the fast forward);
paper_data reproduces the authors' released numbers.

What the kit keeps in memory between calls (loaded models, their caches) is owned by one object, described in
:mod:`ctx_utils.session`; importing the package changes nothing in the process (no thread count, no variable).
"""

__version__ = "0.1.0"
