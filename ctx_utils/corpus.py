"""Text corpora to scan for max-activating prompts: the organism's synthetic corpus, pile-10k, or local files.

``load_corpus`` returns a plain list of documents (strings). The organism's corpus is generated on the fly
from a fixed seed (so it needs no download and is identical on every machine) and has a held-out ``test``
split, as the paper explains on pile-10k and scores on separate Pile test documents (paper-method §2.2).
"""

from __future__ import annotations

from pathlib import Path

from ctx_utils.models import HubUnreachableError, hub_reachable

PILE_10K = "NeelNanda/pile-10k"
SPLITS = ("train", "test")


def load_corpus(name: str = "organism", split: str = "train", max_docs: int | None = None) -> list[str]:
    """Documents of a corpus.

    ``name``: ``organism`` (synthetic, seeded; splits ``train`` and ``test``), ``pile-10k`` (the paper's
    training split, through ``datasets``; needs the hub or its cache), or a path to a ``.txt`` file (one
    document per blank-line-separated paragraph), a ``.jsonl`` file (a ``text`` field per line) or a folder
    of ``.txt`` files (one document each). ``max_docs`` keeps the first documents only.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: choose one of {SPLITS}.")
    if name == "organism":
        from ctx_utils.organism.corpus import generate_corpus

        docs = generate_corpus(split)
    elif name == "pile-10k":
        docs = _load_pile_10k(split)
    elif Path(name).expanduser().exists():
        docs = _load_local(Path(name).expanduser())
    else:
        raise ValueError(
            f"Unknown corpus {name!r}: use 'organism', 'pile-10k', or the path of a .txt/.jsonl file or a folder of .txt files."
        )
    docs = docs[:max_docs] if max_docs is not None else docs
    if not docs:
        raise ValueError(f"Corpus {name!r} ({split}) holds no documents: check the file or folder.")
    return docs


def _load_pile_10k(split: str) -> list[str]:
    if split != "train":
        raise ValueError(
            "pile-10k has only a train split. The paper's test split (the first 10k Pile test documents) was "
            "never released; use the organism's test split, or a local file of held-out documents."
        )
    import datasets

    try:
        ds = datasets.load_dataset(PILE_10K, split="train")
    except Exception as err:  # datasets raises several types when offline; all mean the same to a user
        if not hub_reachable():
            raise HubUnreachableError(
                f"Cannot load {PILE_10K}: the Hugging Face hub is unreachable and the dataset is not cached. "
                "Use the 'organism' corpus offline."
            ) from None
        raise RuntimeError(f"Loading {PILE_10K} failed: {err}") from err
    return list(ds["text"])


def _load_local(path: Path) -> list[str]:
    import json

    if path.is_dir():
        return [p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt"))]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    return [doc.strip() for doc in text.split("\n\n") if doc.strip()]
