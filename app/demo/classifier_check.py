"""How well feature classifiers find a concept in held-out demo text, beside the prompted model.

    report = classifier_check(model, saes, "topic/golden gate bridge", World(1, 2), World(12, 2))
    report["learned"]["held_out"]["f1"], report["baseline"]["held_out"]["f1"]

Documents are labelled by the world's ground truth: a topic document keeps to its subject, a
chat has its assistant's persona, and any document naming a concept key carries it. The
classifiers are trained on one world seed's documents and measured on another's, so neither the
features they read nor their thresholds have seen the measured text.
"""

from collections.abc import Callable, Iterator, Mapping

import torch

from app.core.classifier import (
    PROMPT,
    best_cut,
    learn_classifier,
    pick_classifier,
    precision_recall,
    prompted_scores,
)
from app.core.contrast import effect_sizes, text_peaks
from app.core.errors import MonoscopeError
from app.core.model import LoadedModel
from app.core.sae import Sae
from app.demo.catalogue import CATALOGUE
from app.demo.world import Document, World


def concept_phrase(target: str) -> str:
    """What the prompted baseline is asked about: a topic's subject, a persona, a concept."""
    kind, _, name = target.partition("/")
    if kind == "topic":
        return f"the {name}"
    if kind == "persona":
        return f"someone speaking like a {name}"
    if target not in CATALOGUE.by_key:
        raise MonoscopeError(f"unknown target {target!r}: topic/<subject>, persona/<name> or a key")
    return CATALOGUE.by_key[target].name


def has_target(document: Document, target: str) -> bool:
    kind, _, name = target.partition("/")
    if kind == "topic":
        return name in document.topics
    if kind == "persona":
        return document.persona == name
    concept = CATALOGUE.by_key[target].id
    return any(c == concept for _, _, c in document.spans)


def labelled_documents(
    world: World, target: str, per_class: int, fits: Callable[[str], bool], scan: int = 20_000
) -> tuple[list[str], list[bool]]:
    """Up to `per_class` documents with the target and as many without, in world order, each
    one that `fits` (the model's window, with the baseline's question around it)."""
    positive: list[str] = []
    negative: list[str] = []
    documents: Iterator[Document] = world.documents(scan)
    for document in documents:
        if not fits(document.text):
            continue
        side = positive if has_target(document, target) else negative
        if len(side) < per_class:
            side.append(document.text)
        if len(positive) == per_class and len(negative) == per_class:
            break
    if len(positive) < 4:
        raise MonoscopeError(f"only {len(positive)} documents of {scan:,} carry {target!r}")
    negative = negative[: len(positive)]
    return positive + negative, [True] * len(positive) + [False] * len(negative)


def classifier_check(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    target: str,
    train_world: World,
    test_world: World,
    per_class: int = 64,
    max_tokens: int = 256,
) -> dict:
    """Held-out precision, recall and F1 of a learned classifier, of the single feature that
    best tells the training documents apart, and of the prompted model, each fit on
    `train_world`'s documents and measured on `test_world`'s."""
    phrase = concept_phrase(target)
    room = max_tokens - len(model.tokenizer(PROMPT.format(text="", concept=phrase))["input_ids"])

    def fits(text: str) -> bool:
        return len(model.tokenizer(text)["input_ids"]) <= room

    train_texts, train_y = labelled_documents(train_world, target, per_class, fits)
    test_texts, test_y = labelled_documents(test_world, target, per_class, fits)
    train = text_peaks(model, saes, train_texts, max_tokens)
    test = text_peaks(model, saes, test_texts, max_tokens)
    learned = learn_classifier(train, train_y)
    has = torch.tensor(train_y)
    _, best_sae, best_index = max(  # the feature strongest on the target's documents
        (float(effect.max()), name, int(effect.argmax()))
        for name, values in train.items()
        for effect in [effect_sizes(values[has], values[~has])]
    )
    picked = pick_classifier(train, train_y, best_sae, best_index)
    asked_train = prompted_scores(model, train_texts, phrase, max_tokens)
    asked_test = prompted_scores(model, test_texts, phrase, max_tokens)
    cut = best_cut(asked_train, train_y)

    def figures(train_pred, test_pred) -> dict:
        return {
            "train": precision_recall(train_pred, train_y),
            "held_out": precision_recall(test_pred, test_y),
        }

    return {
        "target": target,
        "asked_about": phrase,
        "learned": figures(learned.decide(train) > 0, learned.decide(test) > 0)
        | {"features": len(learned.features)},
        "single_feature": figures(picked.decide(train) > 0, picked.decide(test) > 0)
        | {"feature": f"{picked.features[0][0]}/{picked.features[0][1]}"},
        "baseline": figures(asked_train > cut, asked_test > cut),
    }
