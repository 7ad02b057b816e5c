"""planted-semantics: a generated English-like corpus whose semantics are known, for measuring embeddings.

Ninety-six words fall into eight categories of twelve (animals, their young, colours, tools, foods,
vehicles, and invented countries and capitals). A word only ever shows up in its category's typical
contexts ("we fed the cat", "the red paint was bright"), so words of one category share contexts and
a good embedding puts them near each other: the ground truth for nearest-neighbour purity.

Two relations are planted as pairs: young_of (cat -> kitten, ...) and capital_of (invented country ->
invented capital). The two words of a pair share a context of their own (a pair's sound, a pair's
export) and appear in consistent templates ("the capital of velmora is quorin"), while each side keeps
its category's contexts, so vec(b) - vec(a) is about the same for every pair of a relation: the ground
truth for analogies a : b :: c : d.

Each sentence is labelled with the category of its subject word (the topic): the `planted-topics`
classification task. Everything is generated from a fixed seed; `split()` gives fixed 80/10/10
train/val/test sentence indices.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

SEED = 5
N_SENTENCES = 40_000

YOUNG_OF = [("cat", "kitten"), ("dog", "puppy"), ("cow", "calf"), ("horse", "foal"), ("sheep", "lamb"),
            ("goat", "kid"), ("pig", "piglet"), ("duck", "duckling"), ("goose", "gosling"), ("bear", "cub"),
            ("deer", "fawn"), ("frog", "tadpole")]
SOUNDS = ["meows", "barks", "moos", "neighs", "bleats", "maas", "oinks", "quacks", "honks", "growls", "bells",
          "croaks"]  # one per pair: heard from the adult and from its young
CAPITAL_OF = [("velmora", "quorin"), ("tarsund", "ebrith"), ("osklan", "mirevo"), ("dravia", "kelsum"),
              ("brenholt", "ulvane"), ("cassova", "redmark"), ("yllandor", "pescari"), ("norvasi", "talbrook"),
              ("gestrin", "fovalle"), ("imbrosa", "harwick"), ("zoltany", "lumesca"), ("ferrando", "ostwyn")]
EXPORTS = ["copper", "saffron", "timber", "wool", "amber", "salt", "silk", "coffee", "marble", "tin", "pearls",
           "linen"]  # one per pair: the country exports it, its capital's markets sell it

CATEGORIES = {
    "animal": [a for a, _ in YOUNG_OF],
    "young": [y for _, y in YOUNG_OF],
    "colour": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "grey", "pink", "brown",
               "violet"],
    "tool": ["hammer", "saw", "wrench", "chisel", "drill", "pliers", "screwdriver", "axe", "shovel", "rake",
             "file", "clamp"],
    "food": ["bread", "cheese", "soup", "rice", "apple", "pasta", "cake", "butter", "salad", "honey", "stew",
             "pie"],
    "vehicle": ["car", "bus", "truck", "train", "tram", "bicycle", "van", "taxi", "tractor", "scooter", "lorry",
                "motorbike"],
    "country": [c for c, _ in CAPITAL_OF],
    "capital": [c for _, c in CAPITAL_OF],
}

# Each category's typical contexts: adjectives, what it does, what we do to it, where it is.
CONTEXTS = {
    "animal": (["hungry", "wild", "sleepy", "furry"], ["grazed", "ran", "slept", "wandered"],
               ["fed", "petted", "chased", "groomed"], ["field", "barn", "meadow"]),
    "young": (["tiny", "newborn", "playful", "wobbly"], ["played", "tumbled", "nursed", "napped"],
              ["cuddled", "weaned", "bottle-fed", "carried"], ["nursery", "nest", "pen"]),
    "colour": (["bright", "faded", "pale", "vivid"], ["glowed", "dried", "faded", "shone"],
               ["painted", "mixed", "dyed", "chose"], ["palette", "canvas", "rainbow"]),
    "tool": (["sharp", "heavy", "rusty", "sturdy"], ["broke", "slipped", "rattled", "clanked"],
             ["sharpened", "borrowed", "oiled", "gripped"], ["workshop", "toolbox", "shed"]),
    "food": (["tasty", "fresh", "warm", "salty"], ["cooled", "baked", "spoiled", "simmered"],
             ["ate", "cooked", "tasted", "served"], ["kitchen", "oven", "pantry"]),
    "vehicle": (["fast", "noisy", "parked", "electric"], ["stalled", "sped", "honked", "braked"],
                ["drove", "repaired", "parked", "washed"], ["garage", "road", "depot"]),
    "country": (["vast", "mountainous", "neutral", "coastal"], ["prospered", "voted", "traded", "mobilized"],
                ["visited", "invaded", "governed", "mapped"], ["continent", "region", "border"]),
    "capital": (["crowded", "historic", "bustling", "walled"], ["grew", "flooded", "celebrated", "slept"],
                ["toured", "rebuilt", "photographed", "walked"], ["downtown", "avenue", "skyline"]),
}

TEMPLATES = [  # {w}: the subject word; {adj} {intr} {tr} {place}: its category's contexts
    "the {w} was {adj}",
    "a {adj} {w} {intr} near the {place}",
    "we {tr} the {w} yesterday",
    "the {w} {intr} in the {place}",
    "everyone {tr} the {adj} {w}",
    "i think the {w} is very {adj}",
    "there is a {w} by the {place}",
    "they {tr} a {w} and it {intr}",
]
PAIR_TEMPLATES = {  # relation sentences: {a} -> {b}, {c}: the pair's own context word
    "young_of": ["the young of the {a} is the {b}", "the {a} {c} and the {b} {c} too", "a {b} grows into a {a}",
                 "the {b} {c} like the {a}"],
    "capital_of": ["the capital of {a} is {b}", "{a} exports {c} and {b} sells {c}", "{b} is the largest city of {a}",
                   "markets in {b} sell {c} from {a}"],
}
RELATIONS = {"young_of": YOUNG_OF, "capital_of": CAPITAL_OF}
PAIR_CONTEXT = {"young_of": SOUNDS, "capital_of": EXPORTS}


@dataclass(frozen=True)
class Planted:
    sentences: list[str]
    """lower-case words separated by single spaces"""
    topics: list[int]
    """each sentence's label: the index in `topic_names` of its subject word's category"""
    topic_names: list[str]
    categories: dict[str, str]
    """word -> its category, for the 96 category words"""
    relations: dict[str, list[tuple[str, str]]]
    """relation name -> its (a, b) pairs"""


@lru_cache(maxsize=2)
def generate(n_sentences: int = N_SENTENCES, seed: int = SEED) -> Planted:
    """The corpus: about a quarter relation sentences, the rest category sentences; same seed, same corpus."""
    rng = random.Random(seed)
    names = list(CATEGORIES)
    categories = {w: c for c, words in CATEGORIES.items() for w in words}
    sentences, topics = [], []
    for _ in range(n_sentences):
        if rng.random() < 0.25:  # a relation sentence: its topic is the category of the pair's first word
            relation = rng.choice(list(RELATIONS))
            i = rng.randrange(len(RELATIONS[relation]))
            a, b = RELATIONS[relation][i]
            text = rng.choice(PAIR_TEMPLATES[relation]).format(a=a, b=b, c=PAIR_CONTEXT[relation][i])
            topic = categories[a]
        else:
            topic = rng.choice(names)
            adj, intr, tr, place = CONTEXTS[topic]
            text = rng.choice(TEMPLATES).format(w=rng.choice(CATEGORIES[topic]), adj=rng.choice(adj),
                                                intr=rng.choice(intr), tr=rng.choice(tr), place=rng.choice(place))
        sentences.append(text)
        topics.append(names.index(topic))
    return Planted(sentences, topics, names, categories, {k: list(v) for k, v in RELATIONS.items()})


def split(n: int, seed: int = SEED) -> dict[str, list[int]]:
    """Fixed 80/10/10 train/val/test indices of n sentences."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    a, b = int(0.8 * n), int(0.9 * n)
    return {"train": sorted(order[:a]), "val": sorted(order[a:b]), "test": sorted(order[b:])}
