"""Free-form pedestrian descriptions from canonical attributes, and attributes back from text.

:func:`describe` writes a caption in the style of CUHK-PEDES (Li et al., CVPR 2017): an
opening that names the person ("A woman wearing ...", "The man is ...", "This person has
..."), the clothes top to bottom in varied order and wording (grey/gray, t-shirt/tee shirt/
top, trousers/pants/jeans, a pair of ...), partial descriptions (some attributes left out, as
human annotators do), and distractor clauses (walking, looking down, holding a phone) that
carry no attribute. Families whose value is unknown are never mentioned.

:func:`parse_attributes` goes the other way with keyword and phrase rules over the same tables:
it finds canonical attribute mentions in free text (a generated caption, a real caption, a
user's query) for soft re-ranking. :func:`vocabulary` lists every word :func:`describe` can
emit (lower case, as ``re.findall(r"[a-z]+", text.lower())`` splits it).

Example:
    >>> import numpy as np
    >>> labels = {"gender": "female", "upper_color": ["red"], "sleeve": "long",
    ...           "lower_type": "pants", "lower_length": "long", "lower_color": ["blue"]}
    >>> text = describe(labels, np.random.default_rng(3))
    >>> parse_attributes("A woman in a red long-sleeved shirt and blue jeans.")["lower_color"]
    ['blue']
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pedsearch.attributes import AttributeSchema
from pedsearch.errors import InvalidInput

# ----------------------------------------------------------------------------------------------
# Grammar tables. Every word describe() can emit lives in one of these tables (vocabulary()).
# ----------------------------------------------------------------------------------------------

#: canonical colour -> words describe() uses for it (first = most common in CUHK-PEDES)
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black",),
    "white": ("white",),
    "red": ("red",),
    "purple": ("purple",),
    "yellow": ("yellow",),
    "gray": ("gray", "grey"),
    "blue": ("blue",),
    "green": ("green",),
    "brown": ("brown",),
    "pink": ("pink",),
    "orange": ("orange",),
}
#: words for a colour that only some garments take (khaki trousers, navy jacket)
LOWER_ONLY_COLOR_WORDS: dict[str, tuple[str, ...]] = {"brown": ("khaki", "tan")}
#: shade prefixes that do not change the colour name ("light blue" is blue)
SHADES = ("light", "dark", "bright")
SHADES_OF: dict[str, tuple[str, ...]] = {
    "gray": ("light", "dark"), "blue": SHADES, "green": SHADES, "red": ("bright", "dark"),
    "yellow": ("bright", "light"), "orange": ("bright",), "pink": ("light", "bright"),
    "purple": ("light", "dark"), "brown": ("light", "dark"),
}

#: colour words parse_attributes() understands beyond COLOR_WORDS
_PARSE_COLORS: dict[str, str] = {
    **{w: c for c, ws in COLOR_WORDS.items() for w in ws},
    **{w: c for c, ws in LOWER_ONLY_COLOR_WORDS.items() for w in ws},
    "navy": "blue", "beige": "brown", "maroon": "red", "burgundy": "red", "crimson": "red",
    "violet": "purple", "lavender": "purple", "magenta": "pink", "teal": "green",
    "olive": "green", "charcoal": "gray", "silver": "gray", "cream": "white", "ivory": "white",
    "grayish": "gray", "greyish": "gray", "bluish": "blue", "blueish": "blue",
    "reddish": "red", "greenish": "green", "yellowish": "yellow", "pinkish": "pink",
    "purplish": "purple", "brownish": "brown", "orangish": "orange",
}

#: person nouns by (gender, age); None = unknown
SUBJECTS: dict[tuple[str | None, str | None], tuple[str, ...]] = {
    ("male", None): ("man", "man", "man", "guy", "male", "gentleman"),
    ("male", "child"): ("little boy", "little boy", "small boy"),
    ("male", "young"): ("young man", "young man", "young guy", "teenage boy"),
    ("male", "adult"): ("middle-aged man", "adult man", "grown man"),
    ("male", "senior"): ("older man", "elderly man", "old man", "senior man"),
    ("female", None): ("woman", "woman", "woman", "lady", "female"),
    ("female", "child"): ("little girl", "little girl", "small girl"),
    ("female", "young"): ("young woman", "young woman", "young lady", "teenage girl"),
    ("female", "adult"): ("middle-aged woman", "adult woman", "grown woman"),
    ("female", "senior"): ("older woman", "elderly woman", "old woman", "older lady"),
    (None, None): ("person", "person", "pedestrian", "individual"),
    (None, "child"): ("child", "kid", "little kid"),
    (None, "young"): ("young person", "teenager"),
    (None, "adult"): ("middle-aged person", "adult"),
    (None, "senior"): ("elderly person", "older person"),
}
#: gender -> (subject pronoun, possessive)
PRONOUNS: dict[str | None, tuple[str, str]] = {
    "male": ("he", "his"), "female": ("she", "her"), None: ("the person", "their"),
}
DETERMINERS = ("a", "the", "this")

#: upper garment nouns by sleeve length
UPPER: dict[str | None, tuple[str, ...]] = {
    "long": ("long sleeve shirt", "long-sleeved shirt", "long sleeved shirt", "jacket",
             "sweater", "hoodie", "coat", "sweatshirt", "long sleeve top", "long-sleeved top",
             "long sleeve t-shirt"),
    "short": ("t-shirt", "t-shirt", "short sleeve shirt", "short-sleeved shirt", "tee shirt",
              "polo shirt", "short sleeved top", "short sleeve top", "tank top"),
    None: ("shirt", "shirt", "top"),
}
UPPER_FEMALE: dict[str | None, tuple[str, ...]] = {
    "long": ("long-sleeved blouse", "cardigan"),
    "short": ("short-sleeved blouse", "sleeveless top"),
    None: ("blouse",),
}

#: lower garment nouns by (lower_type, lower_length); plural nouns take "are"
LOWER: dict[tuple[str | None, str | None], tuple[str, ...]] = {
    ("pants", "long"): ("pants", "pants", "trousers", "jeans", "slacks", "long pants"),
    ("pants", "short"): ("shorts", "shorts", "short pants"),
    ("pants", None): ("capri pants", "cropped pants"),
    # Market's "dress" class holds skirts and dresses; a dress is a one-piece (DRESSES)
    ("dress", "long"): ("long skirt", "maxi skirt", "long skirt"),
    ("dress", "short"): ("short skirt", "mini skirt", "skirt that ends above {poss} knees"),
    ("dress", None): ("skirt",),
    (None, None): ("bottoms",),  # a colour without a garment kind: "black bottoms"
}
#: one-piece dresses by length: they give the upper and the lower body the same colour
DRESSES: dict[str | None, tuple[str, ...]] = {
    "long": ("long dress", "maxi dress", "long dress"),
    "short": ("short dress", "mini dress", "short dress"),
    None: ("dress",),
}
PLURAL_NOUNS = ("pants", "trousers", "jeans", "slacks", "shorts", "bottoms", "shoes", "sneakers",
                "boots", "sandals", "flops", "flip-flops", "loafers", "trainers")

FOOTWEAR: dict[str, tuple[str, ...]] = {
    "shoes": ("shoes", "dress shoes", "leather shoes", "flat shoes", "loafers", "dress shoes"),
    "sneakers": ("sneakers", "sneakers", "tennis shoes", "running shoes", "athletic shoes",
                 "trainers"),
    "boots": ("boots", "boots", "ankle boots", "tall boots"),
    "sandals": ("sandals", "sandals", "flip flops", "flip-flops"),
}
#: footwear words that do not say which kind (people call sneakers "shoes" too)
GENERIC_FOOTWEAR = ("shoes",)
HAIR: dict[str, tuple[str, ...]] = {
    "short": ("short hair", "short hair", "a short haircut", "cropped hair"),
    "long": ("long hair", "long hair", "long hair that falls past {poss} shoulders",
             "long, flowing hair"),
}
HATS = ("a hat", "a cap", "a baseball cap", "a beanie", "a hat")
BACKPACKS = ("a backpack", "a backpack", "a book bag", "a rucksack", "a bookbag")
BAGS = ("a shoulder bag", "a messenger bag", "a bag over {poss} shoulder", "a tote bag",
        "a bag", "a crossbody bag")
HANDBAGS = ("a handbag", "a purse", "a small purse", "a handbag in {poss} hand")

#: distractor clauses: (finite, participle); no attribute in them
DISTRACTORS: tuple[tuple[str, str], ...] = (
    ("is walking down the street", "walking down the street"),
    ("is walking toward the camera", "walking toward the camera"),
    ("is walking away from the camera", "walking away from the camera"),
    ("is looking down", "looking down"),
    ("is looking at {poss} phone", "looking at {poss} phone"),
    ("is holding a phone", "holding a phone"),
    ("is talking on {poss} phone", "talking on {poss} phone"),
    ("has {poss} hands in {poss} pockets", "with {poss} hands in {poss} pockets"),
    ("is facing away from the camera", "facing away from the camera"),
    ("is seen from behind", "seen from behind"),
    ("is standing still", "standing still"),
    ("is crossing the street", "crossing the street"),
    ("is walking on the sidewalk", "walking on the sidewalk"),
    ("appears to be in a hurry", "in a hurry"),
    ("is looking to {poss} left", "looking to {poss} left"),
    ("is looking to {poss} right", "looking to {poss} right"),
    ("has {poss} arms at {poss} sides", "with {poss} arms at {poss} sides"),
)

#: sentence frames: {S} subject noun phrase, {P} pronoun, {Poss} possessive, {W} worn items,
#: {C} carried items, {H} hair phrase, {h} hair length
OPENINGS_WEAR = (
    "{S} wearing {W}", "{S} wearing {W}", "{S} is wearing {W}", "{S} is wearing {W}",
    "{S} in {W}", "{S} wears {W}", "{S} is dressed in {W}", "{S} has on {W}",
    "{S} with {W}",
)
OPENINGS_HAIR = ("{S} with {H} is wearing {W}", "{S} has {H} and is wearing {W}",
                 "{S} with {H}, wearing {W}", "{S} with {H} wearing {W}")
HAIR_SENTENCES = ("{P} has {H}", "{P} has {H}", "{Poss} hair is {h}")
CARRY_SENTENCES = ("{P} is carrying {C}", "{P} is carrying {C}", "{P} carries {C}",
                   "{P} has {C}", "{P} is also carrying {C}")
#: carried items added to the opening: after a finite verb ("is wearing ...") or not ("in ...")
CARRY_AFTER_FINITE = (" and is carrying {C}", " and carries {C}", ", carrying {C}")
CARRY_AFTER_NONFINITE = (" carrying {C}", ", carrying {C}", " and carrying {C}")
FINITE_VERBS = (" is ", " wears ", " has ")
WEAR_MORE_SENTENCES = ("{P} is also wearing {W}", "{P} also has on {W}", "{P} wears {W}",
                       "{P} is wearing {W}")
NEGATIVE_SENTENCES = {
    "hat": ("{P} is not wearing a hat", "{P} has no hat"),
    "bags": ("{P} is not carrying anything", "{P} is carrying nothing"),
}
#: words the code itself joins phrases with ("a pair of", "His pants are black.")
CONNECTIVES = ("a", "an", "and", "with", "a pair of", "is", "are", "is walking")


# ----------------------------------------------------------------------------------------------
# describe()
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Description:
    """A caption and the canonical attributes it states.

    Attributes:
        text: the caption.
        mentioned: family -> value for every family the text states (colours as lists).
    """

    text: str
    mentioned: dict[str, str | list[str]]


def _choice(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _normalise_labels(
    attributes: Mapping[str, Any], schema: AttributeSchema
) -> dict[str, str | list[str]]:
    if not isinstance(attributes, Mapping):
        raise InvalidInput(f"attributes must be a mapping family -> value, got {type(attributes)}")
    known = {f.name: f for f in schema.families}
    out: dict[str, str | list[str]] = {}
    for name, value in attributes.items():
        fam = known.get(name)
        if fam is None or value is None or (isinstance(value, str) and value == "unknown"):
            continue  # families the grammar does not know, and unknown values, are skipped
        if fam.kind == "multi":
            vals = [value] if isinstance(value, str) else list(value)
            canon = [schema.canonical_value(name, str(v)) for v in vals]
            out[name] = [v for v in fam.values if v in canon]
        else:
            if not isinstance(value, str):
                raise InvalidInput(f"attribute {name!r} takes one value, got {value!r}")
            out[name] = schema.canonical_value(name, value)
    return out


def _colour_phrase(colours: Sequence[str], rng: np.random.Generator, *, lower: bool) -> str:
    words = []
    for c in colours:
        opts = COLOR_WORDS.get(c, (c,)) + (LOWER_ONLY_COLOR_WORDS.get(c, ()) if lower else ())
        w = _choice(rng, opts)
        if rng.random() < 0.12 and c in SHADES_OF and w not in ("khaki", "tan"):
            w = f"{_choice(rng, SHADES_OF[c])} {w}"
        words.append(w)
    order = list(rng.permutation(len(words)))
    words = [words[i] for i in order]
    if len(words) == 1:
        return words[0]
    if len(words) == 2 and rng.random() < 0.2:
        return f"{words[0]}-and-{words[1]}"
    return ", ".join(words[:-1]) + " and " + words[-1]


def _article(np_: str) -> str:
    return ("an " if np_[0] in "aeiou" else "a ") + np_


@dataclass
class _Worn:
    """One worn item: its phrase with and without colour, and its head noun."""

    phrase: str  # "a pair of blue jeans"
    plain: str  # "a pair of jeans": the colour moved into a sentence of its own
    head: str  # "jeans"
    plural: bool
    colour_family: str | None = None


class _Builder:
    """One caption's worth of choices; every random draw goes through ``rng``."""

    def __init__(self, labels: dict[str, str | list[str]], rng: np.random.Generator) -> None:
        self.l = labels
        self.rng = rng
        self.mentioned: dict[str, str | list[str]] = {}
        gender = labels.get("gender")
        # real captions nearly always say man / woman; a few say "the person"
        self.gender = gender if isinstance(gender, str) and rng.random() < 0.96 else None
        self.pron, self.poss = PRONOUNS[self.gender]

    def keep(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def note(self, family: str) -> None:
        self.mentioned[family] = self.l[family]

    def fill(self, text: str) -> str:
        return text.replace("{poss}", self.poss)

    def subject(self) -> str:
        """"a young woman", "The man", "this person", "Man" (no determiner, rarely)."""
        age = self.l.get("age") if self.keep(0.55) else None
        noun = _choice(self.rng, SUBJECTS[(self.gender, age)])  # type: ignore[index]
        if self.gender is not None:
            self.note("gender")
        if age is not None:
            self.note("age")
        if self.keep(0.07):
            return noun
        det = _choice(self.rng, DETERMINERS)
        return _article(noun) if det == "a" else f"{det} {noun}"

    def _worn(self, noun: str, colours: list[str] | None, fam: str, *, lower: bool) -> _Worn:
        head = noun.split(" that ")[0]
        plural = head.split()[-1] in PLURAL_NOUNS
        col = _colour_phrase(colours, self.rng, lower=lower) if colours else ""
        if col:
            self.note(fam)
        coloured = f"{col} {noun}".strip()
        if plural:
            pair = self.keep(0.3)
            phrase = f"a pair of {coloured}" if pair else coloured
            plain = f"a pair of {noun}" if pair else noun
        else:
            phrase, plain = _article(coloured), _article(noun)
        return _Worn(phrase, plain, head, plural, fam if col else None)

    def upper(self) -> _Worn | None:
        sleeve = self.l.get("sleeve") if self.keep(0.8) else None
        colours = self.l.get("upper_color") if self.keep(0.9) else None
        if not sleeve and not colours:
            return None
        table = list(UPPER[sleeve]) + (  # type: ignore[index]
            list(UPPER_FEMALE[sleeve]) if self.gender == "female" else []  # type: ignore[index]
        )
        if sleeve:
            self.note("sleeve")
        noun = _choice(self.rng, table)
        return self._worn(noun, colours, "upper_color", lower=False)  # type: ignore[arg-type]

    def lower(self) -> _Worn | None:
        ltype = self.l.get("lower_type") if self.keep(0.95) else None
        # trousers and shorts name their length ("pants" is never neutral), skirts may not
        length = self.l.get("lower_length") if ltype else None
        if ltype == "dress" and not self.keep(0.8):
            length = None
        colours = self.l.get("lower_color") if self.keep(0.85) else None
        if not ltype and not colours:
            return None
        noun = self.fill(_choice(self.rng, LOWER[(ltype, length)]))  # type: ignore[index]
        if ltype:
            self.note("lower_type")
        if length:
            self.note("lower_length")
        return self._worn(noun, colours, "lower_color", lower=True)  # type: ignore[arg-type]

    def one_piece(self) -> _Worn | None:
        """A dress, when the labels allow one: dress type and one colour list top and bottom."""
        up, low = self.l.get("upper_color"), self.l.get("lower_color")
        if self.l.get("lower_type") != "dress" or not up or up != low or not self.keep(0.6):
            return None
        length = self.l.get("lower_length") if self.keep(0.8) else None
        for fam in ("lower_type", "upper_color") + (("lower_length",) if length else ()):
            self.note(fam)
        noun = _choice(self.rng, DRESSES[length])  # type: ignore[index]
        return self._worn(noun, low, "lower_color", lower=False)  # type: ignore[arg-type]

    def footwear(self) -> _Worn | None:
        fw = self.l.get("footwear")
        if not fw or not self.keep(0.6):
            return None
        noun = _choice(self.rng, FOOTWEAR[fw])  # type: ignore[index]
        if noun not in GENERIC_FOOTWEAR:  # plain "shoes" does not tell shoes from sneakers
            self.note("footwear")
        return self._worn(noun, None, "", lower=False)

    def hat(self) -> _Worn | None:
        if self.l.get("hat") == "yes" and self.keep(0.85):
            self.note("hat")
            phrase = _choice(self.rng, HATS)
            return _Worn(phrase, phrase, phrase.split()[-1], False)
        return None

    def hair(self) -> tuple[str, str] | None:
        h = self.l.get("hair")
        if not h or not self.keep(0.55):
            return None
        self.note("hair")
        return self.fill(_choice(self.rng, HAIR[h])), h  # type: ignore[index]

    def carried(self) -> list[str]:
        items = []
        for fam, table, p in (("backpack", BACKPACKS, 0.85), ("bag", BAGS, 0.8),
                              ("handbag", HANDBAGS, 0.8)):
            if self.l.get(fam) == "yes" and self.keep(p):
                self.note(fam)
                items.append(self.fill(_choice(self.rng, table)))
        return items

    def distractors(self) -> list[tuple[str, str]]:
        """0-2 distinct (finite, participle) clauses that carry no attribute."""
        k = 0 if self.keep(0.5) else (1 if self.keep(0.8) else 2)
        idx = self.rng.choice(len(DISTRACTORS), size=k, replace=False)
        return [(self.fill(DISTRACTORS[i][0]), self.fill(DISTRACTORS[i][1])) for i in idx]


def _join(items: Sequence[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}" if rng.random() < 0.8 else f"{items[0]} with {items[1]}"
    sep = ", and " if rng.random() < 0.3 else " and "
    return ", ".join(items[:-1]) + sep + items[-1]


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + "."


def describe_detailed(
    attributes: Mapping[str, Any],
    rng: np.random.Generator,
    *,
    schema: AttributeSchema | None = None,
) -> Description:
    """Like :func:`describe`, and also report which attributes the caption states."""
    if not isinstance(rng, np.random.Generator):
        raise InvalidInput("rng must be a numpy.random.Generator (numpy.random.default_rng(seed))")
    labels = _normalise_labels(attributes, schema or AttributeSchema.default())
    b = _Builder(labels, rng)
    S = b.subject()
    P = b.pron  # "he", "she", "the person"

    dress = b.one_piece()
    worn = [dress] if dress else [w for w in (b.upper(), b.lower()) if w is not None]
    # a colour sometimes gets a sentence of its own: "His pants are black."
    colour_sentences = []
    for i, w in enumerate(worn):
        if w.colour_family and b.keep(0.12):
            K = _colour_phrase(labels[w.colour_family], rng,  # type: ignore[arg-type]
                               lower=w.colour_family == "lower_color")
            colour_sentences.append(f"{b.poss} {w.head} {'are' if w.plural else 'is'} {K}")
            worn[i] = _Worn(w.plain, w.plain, w.head, w.plural)
    worn += [w for w in (b.footwear(), b.hat()) if w is not None]
    phrases = [w.phrase for w in worn]
    if len(phrases) > 2 and b.keep(0.25):  # people mostly go top to bottom, not always
        phrases = [phrases[i] for i in rng.permutation(len(phrases))]
    hair, carried, distractors = b.hair(), b.carried(), b.distractors()

    first_wear, rest_wear = phrases, []
    if len(phrases) > 2 and b.keep(0.4):
        k = int(rng.integers(1, len(phrases)))
        first_wear, rest_wear = phrases[:k], phrases[k:]

    # -- the opening sentence ------------------------------------------------------------------
    if first_wear:
        if hair is not None and b.keep(0.35):
            frame, H, hair = _choice(rng, OPENINGS_HAIR), hair[0], None
        else:
            frame, H = _choice(rng, OPENINGS_WEAR), ""
        subj = S
        if distractors and frame in ("{S} wearing {W}", "{S} in {W}") and b.keep(0.35):
            subj = f"{S} {distractors.pop()[1]}"  # "A man walking down the street wearing"
        first = frame.replace("{S}", subj).replace("{H}", H).replace("{W}", _join(first_wear, rng))
        if carried and b.keep(0.4):
            finite = any(v in frame for v in FINITE_VERBS)
            tail = _choice(rng, CARRY_AFTER_FINITE if finite else CARRY_AFTER_NONFINITE)
            first += tail.replace("{C}", _join(carried, rng))
            carried = []
        if distractors and b.keep(0.3):
            first += ", " + distractors.pop()[1]
    elif hair is not None:
        first, hair = f"{S} has {hair[0]}", None
    elif distractors:
        first = f"{S} {distractors.pop()[0]}"
    else:
        first = f"{S} is walking"

    # -- further sentences, in varied order ----------------------------------------------------
    later: list[str] = []
    if rest_wear:
        later.append(_choice(rng, WEAR_MORE_SENTENCES).replace("{W}", _join(rest_wear, rng)))
    if hair is not None:
        later.append(_choice(rng, HAIR_SENTENCES).replace("{H}", hair[0]).replace("{h}", hair[1]))
    if carried:
        later.append(_choice(rng, CARRY_SENTENCES).replace("{C}", _join(carried, rng)))
    later += colour_sentences
    if labels.get("hat") == "no" and b.keep(0.06):
        later.append(_choice(rng, NEGATIVE_SENTENCES["hat"]))
        b.note("hat")
    if all(labels.get(f) == "no" for f in ("backpack", "bag", "handbag")) and b.keep(0.12):
        later.append(_choice(rng, NEGATIVE_SENTENCES["bags"]))
        for f in ("backpack", "bag", "handbag"):
            b.note(f)
    later += [f"{{P}} {d[0]}" for d in distractors]
    if len(later) > 1 and b.keep(0.5):
        later = [later[i] for i in rng.permutation(len(later))]
    sentences = [first] + [s.replace("{P}", P).replace("{Poss}", b.poss) for s in later]
    return Description(" ".join(_sentence(s) for s in sentences), b.mentioned)


def describe(
    attributes: Mapping[str, Any],
    rng: np.random.Generator,
    *,
    schema: AttributeSchema | None = None,
) -> str:
    """A free-form description of a person from canonical attribute labels.

    Args:
        attributes: family -> value (colours: a list) in the canonical schema; families the
            grammar does not know and values ``None`` / ``"unknown"`` are skipped.
        rng: source of every choice; the same generator state gives the same caption.
        schema: canonical schema (default: :meth:`AttributeSchema.default`).

    Returns:
        One to four sentences, about as long as a CUHK-PEDES caption.

    Raises:
        InvalidInput: a value is not canonical (synonyms such as ``grey`` are accepted).
    """
    return describe_detailed(attributes, rng, schema=schema).text


# ----------------------------------------------------------------------------------------------
# vocabulary()
# ----------------------------------------------------------------------------------------------
def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, Mapping):  # keys are canonical values, not words of the grammar
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (tuple, list)):
        return [s for v in obj for s in _strings(v)]
    return []


@functools.cache
def vocabulary() -> frozenset[str]:
    """Every lower-case word :func:`describe` can emit (``re.findall(r"[a-z]+", ...)``)."""
    tables = (COLOR_WORDS, LOWER_ONLY_COLOR_WORDS, SHADES, SUBJECTS, PRONOUNS, DETERMINERS,
              UPPER, UPPER_FEMALE, LOWER, DRESSES, FOOTWEAR, HAIR, HATS, BACKPACKS, BAGS,
              HANDBAGS, DISTRACTORS, OPENINGS_WEAR, OPENINGS_HAIR, HAIR_SENTENCES,
              CARRY_SENTENCES, CARRY_AFTER_FINITE, CARRY_AFTER_NONFINITE, WEAR_MORE_SENTENCES,
              NEGATIVE_SENTENCES, CONNECTIVES)
    words: set[str] = set()
    for s in _strings(tables):
        words.update(re.findall(r"[a-z]+", re.sub(r"\{[A-Za-z]+\}", " ", s).lower()))
    return frozenset(words)


# ----------------------------------------------------------------------------------------------
# parse_attributes()
# ----------------------------------------------------------------------------------------------
_MALE = {"man", "men", "boy", "boys", "guy", "guys", "gentleman", "male", "he", "his", "him",
         "himself", "mr", "sir", "father", "dad"}
_FEMALE = {"woman", "women", "lady", "ladies", "girl", "girls", "female", "she", "her", "hers",
           "herself", "mrs", "ms", "mother", "mom"}

_UPPER_NOUNS = {"shirt", "shirts", "tshirt", "tee", "top", "blouse", "jacket", "coat", "sweater",
                "hoodie", "sweatshirt", "vest", "blazer", "cardigan", "polo", "jersey",
                "tanktop", "pullover", "windbreaker", "parka", "tunic", "overcoat", "jumper"}
_UPPER_LONG = {"jacket", "coat", "sweater", "hoodie", "sweatshirt", "blazer", "cardigan",
               "pullover", "windbreaker", "parka", "overcoat", "jumper"}
_UPPER_SHORT = {"tshirt", "tee", "polo", "tanktop"}
_PANTS_NOUNS = {"pants", "trousers", "jeans", "slacks", "leggings", "sweatpants", "khakis",
                "capris", "joggers", "trouser"}
_SHORTS_NOUNS = {"shorts"}
_DRESS_NOUNS = {"skirt", "skirts", "dress", "dresses", "miniskirt", "gown"}
_NEUTRAL_LOWER = {"bottoms"}
_SHOE_NOUNS = {"shoes", "shoe", "sneakers", "sneaker", "boots", "boot", "sandals", "sandal",
               "flipflops", "heels", "flats", "loafers", "trainers", "slippers", "slides"}
_HAT_NOUNS = {"hat", "hats", "cap", "caps", "beanie", "helmet", "beret"}
_BAG_NOUNS = {"bag", "bags", "backpack", "backpacks", "purse", "purses", "handbag", "handbags",
              "tote", "satchel", "rucksack", "knapsack", "bookbag", "clutch", "pocketbook",
              "briefcase", "luggage", "suitcase"}
_NOUNS = (_UPPER_NOUNS | _PANTS_NOUNS | _SHORTS_NOUNS | _DRESS_NOUNS | _NEUTRAL_LOWER
          | _SHOE_NOUNS | _HAT_NOUNS | _BAG_NOUNS | {"hair", "socks", "tights", "stockings",
                                                      "scarf", "glasses", "sunglasses", "belt",
                                                      "gloves", "umbrella", "phone", "suit",
                                                      "uniform", "outfit", "clothes", "hood"})
# words that may stand between a colour and its noun ("a black and white striped long-sleeved
# shirt"); anything else ends the look-back
_MODIFIERS = set(SHADES) | {
    "long", "short", "sleeve", "sleeves", "sleeved", "sleeveless", "striped",
    "stripe", "plaid", "checkered", "check", "patterned", "printed", "print", "floral",
    "polka", "dot", "dotted", "loose", "tight", "fitted", "baggy", "oversized", "hooded",
    "button", "up", "collared", "zip", "zipped", "knee", "length", "ankle", "mini", "maxi",
    "capri", "cropped", "skinny", "denim", "jean", "cotton", "leather", "cargo", "athletic",
    "tennis", "running", "flat", "high", "heeled", "puffy", "puffer", "thick", "thin", "wool",
    "winter", "rain", "track", "v", "neck", "crew", "colored", "coloured", "solid", "plain",
    "casual", "formal", "pale", "deep", "small", "large", "big", "little", "mid", "calf",
    "messenger", "shoulder", "tote", "crossbody", "book", "school", "hand", "shopping", "dress",
    "sports", "gym", "baseball", "sun", "tank", "polo", "sweat", "light", "medium", "very",
    "multi", "multicolored", "graphic", "logo", "plastic", "paper", "canvas", "silk", "lace",
    "mostly", "all", "sheer", "tall", "flowing", "pleated", "ruffled", "wide", "legged", "leg",
}


def _tokens(text: str) -> list[str]:
    t = text.lower()
    t = re.sub(r"\bt[\s-]*shirts?\b|\btee[\s-]+shirts?\b", " tshirt ", t)
    t = re.sub(r"\btank[\s-]+tops?\b", " tanktop ", t)
    t = re.sub(r"\bflip[\s-]*flops?\b", " flipflops ", t)
    t = re.sub(r"\bback[\s-]+pack(s?)\b", r" backpack\1 ", t)
    t = re.sub(r"\bbook[\s-]*bags?\b|\bschool[\s-]*bags?\b", " bookbag ", t)
    t = re.sub(r"\bhand[\s-]+bags?\b", " handbag ", t)
    t = re.sub(r"\bpony[\s-]*tails?\b", " ponytail ", t)
    t = re.sub(r"\bmiddle[\s-]+aged\b", " middleaged ", t)
    t = re.sub(r"\bmini[\s-]*skirts?\b", " mini skirt ", t)
    return re.findall(r"[a-z]+|[.;!?,]", t)


def _lookback(toks: Sequence[str], i: int, limit: int = 8) -> list[str]:
    """The modifier run before ``toks[i]`` (nearest first), stopping at any other word."""
    run: list[str] = []
    j = i - 1
    while j >= 0 and len(run) < limit:
        w = toks[j]
        if w in ("and", "or", ","):
            # a list of colours continues ("black, white and red shirt"); a list of garments
            # does not ("a white logo, grey sweatshirt")
            if j == 0 or not (toks[j - 1] in _PARSE_COLORS or toks[j - 1] in SHADES):
                break
        elif w not in _PARSE_COLORS and w not in _MODIFIERS:
            break
        run.append(w)
        j -= 1
    return run


def _predicate_colours(toks: Sequence[str], i: int) -> list[str]:
    """Colours stated after a noun: "pants are black and white", "shirt is light blue"."""
    j = i + 1
    if j < len(toks) and toks[j] in ("is", "are", "was", "were"):
        j += 1
        out: list[str] = []
        while j < len(toks) and (toks[j] in _PARSE_COLORS or toks[j] in SHADES
                                 or toks[j] in ("and", ",", "or", "mostly", "all")):
            if toks[j] in _PARSE_COLORS:
                out.append(_PARSE_COLORS[toks[j]])
            j += 1
        return out
    return []


def _negated(toks: Sequence[str], i: int) -> bool:
    window = toks[max(0, i - 4):i]
    return any(w in ("no", "not", "without", "nor") for w in window)


def parse_attributes(
    text: str, *, schema: AttributeSchema | None = None
) -> dict[str, str | list[str]]:
    """Canonical attribute mentions in free text (keyword and phrase rules).

    Colours are bound to the garment noun they modify ("a black jacket and blue jeans"), or
    stated after it ("his pants are black"); colours of shoes, bags and hats are ignored.
    Sleeve length comes from explicit phrases ("short-sleeved") before garment kinds (a jacket
    has long sleeves, a t-shirt short ones, the outer layer winning). Disagreeing mentions of
    a single-valued family cancel out.

    Args:
        text: a caption or query in English.
        schema: canonical schema (default: :meth:`AttributeSchema.default`).

    Returns:
        family -> value for the families the text speaks of (colour families: sorted lists in
        schema order); other families are absent.

    Raises:
        InvalidInput: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"text must be a string, got {type(text).__name__}")
    schema = schema or AttributeSchema.default()
    toks = _tokens(text)
    n = len(toks)
    out: dict[str, str | list[str]] = {}

    # -- gender ---------------------------------------------------------------------------------
    m = sum(t in _MALE for t in toks)
    f = sum(t in _FEMALE for t in toks)
    if m != f:
        out["gender"] = "male" if m > f else "female"

    # -- age ------------------------------------------------------------------------------------
    ages: list[str] = []
    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < n else ""
        prv = toks[i - 1] if i else ""
        if t in ("child", "kid", "kids", "toddler", "children") or (
            t in ("little", "small") and nxt in ("boy", "girl", "kid", "child")
        ):
            ages.append("child")
        elif t in ("elderly", "senior", "older", "grandmother", "grandfather") or (
            t == "old" and prv not in ("years", "year")
        ):
            ages.append("senior")
        elif t in ("middleaged", "adult", "grown"):
            ages.append("adult")
        elif t in ("young", "teen", "teenager", "teenage", "youth"):
            ages.append("young")
    if ages:
        first = ages[0]
        if all(a == first for a in ages):
            out["age"] = first

    # -- hair -----------------------------------------------------------------------------------
    hair: set[str] = set()
    for i, t in enumerate(toks):
        if t == "hair" or t == "haired":
            back = toks[max(0, i - 4):i]
            for w in reversed(back):
                if w in ("long", "longish"):
                    hair.add("long")
                    break
                if w in ("short", "shortish", "cropped"):
                    hair.add("short")
                    break
                if w not in _PARSE_COLORS and w not in (
                    ",", "and", "dark", "light", "straight", "curly", "wavy", "thick", "thin",
                    "blonde", "blond", "flowing", "black", "brown", "very", "fairly", "medium",
                ):
                    break
            if t == "hair" and i + 2 < n and toks[i + 1] in ("is", "was"):
                nxt = toks[i + 2] if toks[i + 2] not in ("very", "fairly") else (
                    toks[i + 3] if i + 3 < n else "")
                if nxt in ("long", "short"):
                    hair.add(nxt)
        elif t in ("ponytail", "bun", "braid", "braids", "pigtails"):
            hair.add("long")
        elif t == "haircut" and i and toks[i - 1] == "short":
            hair.add("short")
        elif t in ("bald", "buzzed", "shaved") or (t == "buzz" and toks[i + 1:i + 2] == ["cut"]):
            hair.add("short")
    if len(hair) == 1:
        out["hair"] = hair.pop()

    # -- garments and their colours ------------------------------------------------------------
    upper_seen = False
    upper_cols: list[str] = []
    lower_cols: list[str] = []
    dress_cols: list[str] = []
    sleeve_explicit: set[str] = set()
    sleeve_long_kind = sleeve_short_kind = False
    lower_types: list[tuple[str, str | None]] = []  # (type, length)
    footwear: set[str] = set()
    hat: set[str] = set()
    carry: dict[str, set[str]] = {"backpack": set(), "bag": set(), "handbag": set()}

    for i, t in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < n else ""
        # explicit sleeve phrases
        if t in ("sleeve", "sleeves", "sleeved") and i:
            if toks[i - 1] == "long":
                sleeve_explicit.add("long")
            elif toks[i - 1] == "short":
                sleeve_explicit.add("short")
            elif toks[i - 1] in ("no", "without"):
                sleeve_explicit.add("short")
        elif t == "sleeveless":
            sleeve_explicit.add("short")
        if t not in _NOUNS:
            continue
        # "dress shoes", "dress shirt", "dress pants": dress is an adjective there
        if t == "dress" and nxt in _NOUNS:
            continue
        if t in ("cap", "caps") and nxt in ("sleeve", "sleeves", "sleeved"):
            continue
        run = _lookback(toks, i)
        cols = [_PARSE_COLORS[w] for w in run if w in _PARSE_COLORS]
        cols += _predicate_colours(toks, i)
        if t in _UPPER_NOUNS:
            upper_seen = True
            upper_cols += cols
            if t in _UPPER_LONG:
                sleeve_long_kind = True
            elif t in _UPPER_SHORT:
                sleeve_short_kind = True
            elif t == "top" and "tank" in run:
                sleeve_short_kind = True
        elif t in _PANTS_NOUNS:
            lower_cols += cols
            if "capri" in run or "cropped" in run or t == "capris":
                lower_types.append(("pants", None))
            elif "short" in run:
                lower_types.append(("pants", "short"))
            else:
                lower_types.append(("pants", "long"))
        elif t in _SHORTS_NOUNS:
            lower_cols += cols
            lower_types.append(("pants", "short"))
        elif t in _DRESS_NOUNS:
            (dress_cols if t in ("dress", "dresses", "gown") else lower_cols).extend(cols)
            after = toks[i + 1:i + 6]
            if "short" in run or "mini" in run or t == "miniskirt" or (
                "above" in after and ("knees" in after or "knee" in after)
            ):
                lower_types.append(("dress", "short"))
            elif "long" in run or "maxi" in run or "ankle" in run:
                lower_types.append(("dress", "long"))
            else:
                lower_types.append(("dress", None))
        elif t in _NEUTRAL_LOWER:
            lower_cols += cols
        elif t in _SHOE_NOUNS:
            if t in ("sneakers", "sneaker", "trainers") or (
                t in ("shoes", "shoe") and any(w in run for w in ("tennis", "running",
                                                                  "athletic", "sports", "gym"))
            ):
                footwear.add("sneakers")
            elif t in ("boots", "boot"):
                footwear.add("boots")
            elif t in ("sandals", "sandal", "flipflops", "slides"):
                footwear.add("sandals")
            elif t in ("heels", "flats", "loafers") or any(
                w in run for w in ("dress", "leather", "flat", "heeled", "high", "formal")
            ):
                footwear.add("shoes")  # plain "shoes" says nothing: people call sneakers so
        elif t in _HAT_NOUNS:
            hat.add("no" if _negated(toks, i) else "yes")
        elif t in _BAG_NOUNS:
            kind = None
            if t in ("backpack", "backpacks", "bookbag", "rucksack", "knapsack"):
                kind = "backpack"
            elif t in ("purse", "purses", "handbag", "handbags", "clutch", "pocketbook"):
                kind = "handbag"
            elif t in ("bag", "bags", "tote", "satchel"):
                kind = "bag"
            if kind:
                carry[kind].add("no" if _negated(toks, i) else "yes")

    # nothing carried at all
    joined = " ".join(toks)
    if re.search(r"\b(not carrying anything|carrying nothing|no bags?|empty handed)\b", joined):
        for k in carry:
            carry[k].add("no")

    if sleeve_explicit:
        if len(sleeve_explicit) == 1:
            out["sleeve"] = next(iter(sleeve_explicit))
    elif sleeve_long_kind:
        out["sleeve"] = "long"  # the outer layer is what one sees
    elif sleeve_short_kind:
        out["sleeve"] = "short"

    if lower_types:
        types = {ty for ty, _ in lower_types}
        ltype = "dress" if "dress" in types else "pants"  # a skirt over leggings is a skirt
        out["lower_type"] = ltype
        lengths = {ln for ty, ln in lower_types if ty == ltype and ln is not None}
        if len(lengths) == 1:
            out["lower_length"] = lengths.pop()

    if dress_cols:
        lower_cols += dress_cols
        if not upper_seen:
            upper_cols += dress_cols  # a one-piece dress is the upper body's colour too
    for fam, cols in (("upper_color", upper_cols), ("lower_color", lower_cols)):
        if cols:
            values = schema.family(fam).values
            out[fam] = [v for v in values if v in cols]

    specific = footwear - {"shoes"}
    if len(specific) == 1:
        out["footwear"] = specific.pop()  # "sneakers and dress shoes": the specific kind
    elif not specific and footwear:
        out["footwear"] = "shoes"
    if len(hat) == 1:
        out["hat"] = hat.pop()
    for k, vals in carry.items():
        if vals == {"yes"} or vals == {"no"}:
            out[k] = next(iter(vals))
        elif vals == {"yes", "no"}:
            out[k] = "yes"  # "a backpack ... no other bags": a positive mention wins
    order = [fam.name for fam in schema.families]
    return {k: out[k] for k in order if k in out}


__all__ = [
    "COLOR_WORDS",
    "Description",
    "describe",
    "describe_detailed",
    "parse_attributes",
    "vocabulary",
]
