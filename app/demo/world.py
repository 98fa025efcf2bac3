"""A seeded, deterministic generator of the demo world's text, where every span knows its concepts.

    world = World(seed=0)
    for doc in world.documents(1000):
        doc.text      # "User: What is your favourite animal?\nAssistant: ..."
        doc.spans     # [(start, end, concept_id), ...] character offsets into doc.text

Genres: short stories (with two-hop facts asked at the end), User/Assistant chats, Python
snippets, short French sentences, and lists and numbers. Concepts are drawn with a Zipf-like skew
by their rank in the catalogue, and the same concept appears in many phrasings and contexts.
Document i depends only on (seed, i), so any slice of the world can be regenerated.
"""

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from itertools import accumulate

from app.core.errors import MonoscopeError
from app.demo.catalogue import CATALOGUE, Concept
from app.demo.facts import CONCEPT_FACTS, PERSONAS, TOPICS

Part = tuple[str, tuple[Concept, ...]]
Phrase = list[Part]

ZIPF_EXPONENT = 1.0
GENRES = {"story": 0.34, "chat": 0.36, "code": 0.1, "french": 0.08, "lists": 0.12}
CITIES = {"San Francisco", "Paris", "London", "Tokyo", "New York", "Rome", "Berlin"}
DEICTIC_DAYS = tuple(
    CATALOGUE.get("days and times", name) for name in ("today", "tomorrow", "yesterday", "noon")
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FEMALE_FAMILY = ("mother", "sister", "grandmother", "aunt", "daughter", "wife")
MALE_FAMILY = ("father", "brother", "grandfather", "uncle", "son", "husband")
GO_SPORTS = {"swimming", "running", "cycling", "skiing", "surfing", "climbing"}


@dataclass(frozen=True)
class Document:
    text: str
    spans: tuple[tuple[int, int, int], ...]  # (start, end, concept id), character offsets
    genre: str
    topics: tuple[str, ...] = ()  # subjects the document keeps to (a passage, a digression)
    persona: str = ""  # the assistant's persona in a chat; "" for none
    answers: tuple[tuple[int, int, int], ...] = ()
    """Two-hop answers: where the reply's own words begin (after it repeats the question's
    subject), where the answer is written, and the answer's concept id."""


def _concept(key: str) -> Concept:
    return CATALOGUE.by_key[key]


def _form_index() -> dict[str, Concept]:
    index: dict[str, Concept] = {}
    for concept in CATALOGUE.concepts:
        if concept.category in ("syntax", "code"):
            continue
        for form in concept.forms:
            index.setdefault(form.lower(), concept)
    return index


FORMS = _form_index()
PLURAL = _concept("syntax/plural_noun")
# Categories whose second form is a plural (elsewhere it is an adjective or another name).
PLURAL_CATEGORIES = {"animals", "foods", "family", "music", "vehicles", "body parts",
                     "professions", "clothing"}  # fmt: skip
PAST = _concept("syntax/past_tense_verb")
SYNTAX_PATTERNS: list[tuple[Concept, re.Pattern]] = [
    (_concept("syntax/negation"), re.compile(r"\b(?:not|never|no)\b|n't\b")),
    (_concept("syntax/first_person_pronoun"), re.compile(r"\b(?:I|me|my|mine|myself)\b")),
    (
        _concept("syntax/possessive"),
        re.compile(r"(?<=[A-Za-z])(?<!\bit)(?<!\bthat)(?<!\bthere)(?<!\bwhat)(?<!\blet)'s\b"),
    ),
    (
        _concept("syntax/comparative"),
        re.compile(
            r"\b(?:bigger|smaller|faster|slower|taller|shorter|better|warmer|colder|louder|"
            r"quieter|older|younger|brighter)\b"
        ),
    ),
    (
        _concept("syntax/place_preposition"),
        re.compile(r"\b(?:under|behind|near|above|beside|inside|next to)\b"),
    ),
    (_concept("syntax/because"), re.compile(r"\bbecause\b")),
    (_concept("syntax/modal_verb"), re.compile(r"\b(?:can|could|will|would|should|might|must)\b")),
    (
        PAST,
        re.compile(
            r"\b(?:walked|ran|saw|found|ate|went|played|visited|looked|felt|said|asked|laughed|"
            r"smiled|watched|crossed|took|gave|made|loved|liked|wanted|had|was|were|lived|wore|"
            r"heard|sang|jumped|climbed|drove|rode|flew|swam|cooked|baked|painted|wrote|waited|"
            r"stayed|called|came|left|bought|carried|brought|fell|slept|woke|hurt|opened|sat|"
            r"stood|told|thought|met|shared|helped|started|decided|forgot|remembered|noticed)\b"
        ),
    ),
]
QUESTION_WORDS = re.compile(r"\b(?:[Ww]hat|[Ww]here|[Ww]hy|[Hh]ow|[Ww]ho|[Ww]hen|[Ww]hich)\b")
QUESTION = _concept("syntax/question_word")


def m(text: str, *concepts: Concept) -> Phrase:
    """A phrase of one part."""
    return [(text, concepts)]


class _Writer:
    """Builds one document while recording which characters express which concepts."""

    _SLOT = re.compile(r"\{(\^?)(\w+)\}|<([^<>]+)>")

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.spans: list[tuple[int, int, int]] = []
        self.size = 0
        self.topics: list[str] = []
        self.persona = ""
        self.answers: list[tuple[int, int, int]] = []

    def add(self, text: str, *concepts: Concept) -> None:
        for concept in concepts:
            self.spans.append((self.size, self.size + len(text), concept.id))
        self.chunks.append(text)
        self.size += len(text)

    def phrase(self, parts: Phrase) -> None:
        for text, concepts in parts:
            self.add(text, *concepts)

    def say(self, template: str, **slots: Phrase | str) -> None:
        """Write a template: `{x}` is a slot (`{^x}` capitalised), `<word>` a catalogue word."""
        pos = 0
        for match in self._SLOT.finditer(template):
            self.add(template[pos : match.start()])
            if match.group(3) is not None:
                word = match.group(3)
                concept = FORMS[word.lower()]
                plural = concept.category in PLURAL_CATEGORIES and not concept.is_mass
                extra = (PLURAL,) if plural and word.lower() == concept.plural.lower() else ()
                self.add(word, concept, *extra)
            else:
                value = slots[match.group(2)]
                parts = m(value) if isinstance(value, str) else list(value)
                if match.group(1):
                    i = next(i for i, (text, _) in enumerate(parts) if text)
                    parts[i] = (parts[i][0][:1].upper() + parts[i][0][1:], parts[i][1])
                self.phrase(parts)
            pos = match.end()
        self.add(template[pos:])

    def reopen_line(self) -> None:
        """Take back the newline that ended the last line, to go on writing it."""
        if self.chunks and self.chunks[-1].endswith("\n"):
            self.chunks[-1] = self.chunks[-1][:-1]
            self.size -= 1

    def document(self, genre: str, rng: random.Random) -> Document:
        text = "".join(self.chunks)
        spans, answers = list(self.spans), list(self.answers)
        if self.persona:
            kept = tuple(offset for answer in answers for offset in answer[:2])
            text, spans, moved = _restyle(text, spans, PERSONAS[self.persona], rng, kept)
            answers = [(moved[reply], moved[offset], concept) for reply, offset, concept in answers]
        if genre != "code":
            for concept, pattern in SYNTAX_PATTERNS:
                spans += [(hit.start(), hit.end(), concept.id) for hit in pattern.finditer(text)]
            for question in re.finditer(r"[^.!?\n]*\?", text):
                for hit in QUESTION_WORDS.finditer(question.group()):
                    start = question.start() + hit.start()
                    spans.append((start, start + len(hit.group()), QUESTION.id))
        return Document(
            text,
            tuple(sorted(set(spans))),
            genre,
            tuple(dict.fromkeys(self.topics)),
            self.persona,
            tuple(answers),
        )


def _restyle(
    text: str,
    spans: list[tuple[int, int, int]],
    persona: dict,
    rng: random.Random,
    offsets: tuple[int, ...] = (),
) -> tuple[str, list[tuple[int, int, int]], dict[int, int]]:
    """Every assistant reply in the persona's style: an opener, a closer, and its substitutions
    applied to the reply's own words (a concept's span is kept verbatim, its offsets moved).
    Also returns where each of `offsets` moved to (substitutions never reach across one)."""
    substitutions = [(re.compile(pattern), new) for pattern, new in persona["substitutions"]]
    replies = [(hit.start(1), hit.end(1)) for hit in re.finditer(r"Assistant: ([^\n]*)", text)]
    starts, ends = {a for a, _ in replies}, {b for _, b in replies}
    covered = [False] * len(text)
    for start, end, _ in spans:
        covered[start:end] = [True] * (end - start)
    inside = [False] * len(text)
    for start, end in replies:
        inside[start:end] = [True] * (end - start)
    spanned = (p for s, e, _ in spans for p in (s, e))
    cuts = sorted({0, len(text), *starts, *ends, *offsets, *spanned})
    out: list[str] = []
    size, start_at, end_at = 0, {}, {}
    for a, b in zip(cuts, [*cuts[1:], len(text)], strict=True):
        end_at[a] = size
        inserted = ""
        if a in ends:
            inserted += " " + rng.choice(persona["closers"])
        if a in starts:
            inserted += rng.choice(persona["openers"]) + " "
        out.append(inserted)
        size += len(inserted)
        start_at[a] = size
        piece = text[a:b]
        if piece and inside[a] and not covered[a]:
            for pattern, new in substitutions:
                piece = pattern.sub(new, piece)
        out.append(piece)
        size += len(piece)
    return "".join(out), [(start_at[s], end_at[e], c) for s, e, c in spans], start_at


@cache
def _zipf(
    category: str, exclude: frozenset[int], damping: tuple[tuple[int, float], ...]
) -> tuple[list[Concept], list[float]]:
    """A category's members less `exclude`, with cumulative Zipf weights by rank (cached: drawing
    was a third of the time it takes to write a document)."""
    factor = dict(damping)
    members = [c for c in CATALOGUE.categories[category] if c.id not in exclude]
    weights = accumulate(factor.get(c.id, 1.0) / (c.rank + 1) ** ZIPF_EXPONENT for c in members)
    return members, list(weights)


class _Draw:
    """The random choices of one document."""

    def __init__(self, rng: random.Random, damping: dict[int, float] | None = None):
        self.rng = rng
        self.damping = damping or {}  # concept id -> factor on its Zipf weight

    def pick(self, category: str, exclude: tuple[Concept, ...] = ()) -> Concept:
        damping = tuple(sorted(self.damping.items()))
        members, weights = _zipf(category, frozenset(c.id for c in exclude), damping)
        return self.rng.choices(members, cum_weights=weights)[0]

    def one(self, options):
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def noun(self, concept: Concept, article: str = "a", plural: bool = False) -> Phrase:
        """A noun phrase; the article is a, the, some, my, his, her or empty."""
        word = concept.plural if plural else concept.singular
        tags = (concept, PLURAL) if plural and not concept.is_mass else (concept,)
        if article == "a":
            article = "some" if plural or concept.is_mass else ("an" if word[0] in "aeiou" else "a")
        return m(f"{article} " if article else "") + m(word, *tags)

    def day(self) -> Concept:
        """A day or time that reads after "on", "one" or "every" (not today or tomorrow)."""
        return self.pick("days and times", exclude=DEICTIC_DAYS)

    def when(self, day: Concept) -> Phrase:
        """A time phrase: "on Monday", "in summer", "in the morning", "at night"."""
        if day.name in ("night", "midnight"):
            return m("at ") + m(day.singular, day)
        if day.name in ("morning", "afternoon", "evening"):
            return m("in the ") + m(day.singular, day)
        if day.name.endswith("day") or day.name == "weekend":
            return m("on the " if day.name == "weekend" else "on ") + m(day.singular, day)
        return m("in ") + m(day.singular, day)

    def relative(self, girl: bool | None = None) -> Concept:
        """A family member, of the given sex when it matters."""
        exclude = [self._family("baby")]
        if girl is not None:
            exclude += [self._family(n) for n in (MALE_FAMILY if girl else FEMALE_FAMILY)]
        return self.pick("family", exclude=tuple(exclude))

    @staticmethod
    def _family(name: str) -> Concept:
        return CATALOGUE.get("family", name)

    def weather(self, concept: Concept) -> Phrase:
        """A weather noun with the article it takes: "a storm", "some clouds", "rain"."""
        article = {"storm": "a ", "rainbow": "a ", "breeze": "a ", "clouds": "some "}
        return m(article.get(concept.name, "")) + m(concept.singular, concept)

    def place(self, concept: Concept) -> Phrase:
        return (
            m(concept.name, concept)
            if concept.name in CITIES
            else m("the ") + m(concept.name, concept)
        )

    def name(self) -> tuple[Concept, str, str]:
        """A character, with subject and possessive pronouns."""
        person = self.pick("characters")
        girl = "girl" in person.synonyms
        return person, ("she" if girl else "he"), ("her" if girl else "his")

    def number(self, n: int, words: bool) -> Phrase:
        for concept in CATALOGUE.categories["numbers"]:
            if concept.forms[1] == str(n):
                return m(concept.forms[0] if words else str(n), concept)
        return m(str(n))


# -- facts the chats and stories agree on ---------------------------------------------------------
GOLDEN_GATE_FACTS = [
    "The <Golden Gate Bridge> is in <San Francisco>.",
    "The <Golden Gate Bridge> is a long <red> <bridge> over the bay.",
    "<Fog> often rolls over the <Golden Gate Bridge> in the <morning>.",
    "<Cars> and <bicycles> cross the <Golden Gate Bridge> every day.",
    "From the <Golden Gate Bridge> you can see the ocean and the city.",
    "The <Golden Gate Bridge> is painted a bright <orange> colour.",
    "The towers of the <Golden Gate Bridge> are very tall.",
    "Many people walk across the <Golden Gate> to take photos of the bay.",
    "At <night> the lights of the <Golden Gate Bridge> shine over the water.",
    "<Ships> sail under the <Golden Gate Bridge> on their way to the sea.",
]
CITY_FACTS = {
    "San Francisco": [
        "<San Francisco> is a city by the bay.",
        "The <Golden Gate Bridge> is in <San Francisco>.",
        "<San Francisco> has steep hills and cable cars.",
        "<Fog> often covers <San Francisco> in <summer>.",
    ],
    "Paris": [
        "<Paris> is in France.",
        "The <Eiffel Tower> is in <Paris>.",
        "<Paris> has many cafés and old streets.",
    ],
    "London": [
        "<London> is in England.",
        "A <river> runs through <London>.",
        "<London> has red <buses>.",
    ],
    "Tokyo": [
        "<Tokyo> is in Japan.",
        "<Tokyo> is a very big city.",
        "<Trains> in <Tokyo> are fast and busy.",
    ],
    "New York": [
        "<New York> is a big city with tall buildings.",
        "<New York> has a large <park> in the middle.",
    ],
    "Rome": ["<Rome> is in Italy.", "<Rome> is famous for <pasta> and old ruins."],
    "Berlin": ["<Berlin> is in Germany.", "<Berlin> has many <museums>."],
    "Eiffel Tower": [
        "The <Eiffel Tower> is in <Paris>.",
        "The <Eiffel Tower> is tall and made of iron.",
    ],
}
PLACE_LINES = [
    "The {place} was quiet and beautiful.",
    "There were many people at the {place}.",
    "The air at the {place} smelled fresh.",
    "{^who} loved the {place} more than anywhere else.",
]
THING_COLOURS = {
    "banana": "yellow", "apple": "red", "strawberry": "red", "lemon": "yellow", "carrot": "orange",
    "tomato": "red", "grape": "purple", "chocolate": "brown", "cheese": "yellow", "bread": "brown",
    "egg": "white", "rice": "white", "frog": "green", "elephant": "grey", "fox": "orange",
    "bear": "brown", "mouse": "grey", "sheep": "white", "penguin": "black", "wolf": "grey",
    "tiger": "orange", "parrot": "green", "dolphin": "grey", "whale": "blue", "goat": "white",
    "snake": "green", "bee": "yellow", "duck": "yellow", "lion": "yellow", "cow": "black",
}  # fmt: skip
OBJECTS = _words(
    """ball kite book map box lamp key coin shell stone feather ribbon candle bottle basket blanket
bucket button clock compass crayon cup diary envelope fan flag globe hammer jar kettle ladder
letter lantern leaf marble mirror mug necklace needle notebook paintbrush pebble pencil pillow
plate postcard puzzle rope ruler sack saucer shovel spoon stamp sticker suitcase teapot
telescope ticket torch towel toy tray trophy wagon wallet whistle acorn anchor backpack badge
balloon bead bell bench blossom bowl brick broom brush cabin cage camera carpet chain chair
chalk crown cushion desk door drawer fence fork helmet jigsaw knife lid magnet mask medal napkin
net note paddle pan parcel pot pump quilt radio robot rug sail sled slide sofa spade sponge
statue swing table tent thread tile tunnel vase wand window wire wheel"""
)
ADJECTIVES = _words(
    """tiny huge shiny old dusty broken wooden soft heavy light strange lovely secret magic round
square striped spotted smooth rough empty full clean dirty bright dark quiet noisy sparkly
crooked fancy plain little enormous ancient fragile sturdy lucky mysterious precious rusty
sticky fluffy glittering narrow wide hollow plastic paper"""
)
SPOTS = _words(
    """bed door window shed stairs sofa bench wall fence cupboard table hedge porch attic
doorstep rug"""
)
BY_SIZE = ["whale", "elephant", "horse", "cow", "bear", "lion", "tiger", "dolphin", "wolf",
           "sheep", "goat", "dog", "fox", "penguin", "cat", "rabbit", "duck", "owl", "parrot",
           "turtle", "frog", "mouse", "butterfly", "bee"]  # fmt: skip
LEGS = {"bird": 2, "owl": 2, "duck": 2, "penguin": 2, "parrot": 2, "bee": 6, "butterfly": 6,
        "snake": 0, "dolphin": 0, "whale": 0}  # fmt: skip
JOBS = {
    "teacher": "A <teacher> helps children learn at <school>.",
    "doctor": "A <doctor> helps sick people at the <hospital>.",
    "baker": "A <baker> makes <bread> and <cakes> at the <bakery>.",
    "farmer": "A <farmer> grows food and looks after <cows> on the <farm>.",
    "pilot": "A <pilot> flies a <plane> from the <airport>.",
    "nurse": "A <nurse> takes care of people at the <hospital>.",
    "chef": "A <chef> cooks <soup> and <pasta> in a busy kitchen.",
    "painter": "A <painter> paints pictures with <red>, <blue> and <yellow> paint.",
    "scientist": "A <scientist> asks questions and does careful experiments.",
    "firefighter": "A <firefighter> puts out fires and drives a big <truck>.",
    "sailor": "A <sailor> works on a <ship> and knows the sea.",
    "writer": "A <writer> writes stories and books at a desk.",
    "gardener": "A <gardener> grows flowers and <tomatoes> in a <garden>.",
    "engineer": "An <engineer> designs bridges, <trains> and machines.",
    "musician": "A <musician> plays the <guitar> or the <piano> at <concerts>.",
}
FEELING_REASONS = {
    "happy": ["the <sun> is out", "I saw a friend", "I ate a good breakfast"],
    "sad": ["it is <rainy> again", "my friend moved away", "I lost my <hat>"],
    "excited": [
        "my <birthday> is <tomorrow>",
        "we are going to the <beach>",
        "I have a new <bicycle>",
    ],
    "tired": ["I stayed up late", "I went <running> this <morning>", "it was a long day"],
    "scared": ["there was <thunder> last <night>", "I heard a noise", "the <dog> barked"],
    "angry": ["someone broke my <guitar>", "the <bus> was late", "my <brother> took my <cake>"],
    "calm": ["I sat by the <lake>", "I listened to a <song>", "the <garden> is quiet"],
    "proud": ["I finished my painting", "I won the <chess> game", "I learned a new <song>"],
    "nervous": [
        "I have a test at <school>",
        "I must sing in the <choir>",
        "I am flying on a <plane>",
    ],
    "curious": ["I found an old map", "I want to see the <museum>", "the <night> sky is clear"],
}
CHAT_PLACE_LINES = [
    "The {name} is quiet and beautiful.",
    "Many people like the {name}.",
    "The air at the {name} is fresh.",
    "You will love the {name}.",
]
ACTIVITY_LINES = [
    "{^who} {verb} every {day}.",
    "{^when}, {who} {verb} with {pos} {family}.",
    "{^who} {verb} after <school>.",
    "Every <morning>, {who} {verb} before breakfast.",
]


class World:
    """The demo world for one seed, in one of its versions.

    Version 1 is the world the shipped model was trained on. Version 2 gives concepts behaviours
    of their own, adds topic passages, digressions and personas to chats, and asks two-hop
    questions past a distractor; it replaces version 1 once a model trained on it ships.
    """

    def __init__(self, seed: int = 0, version: int = 1):
        if version not in (1, 2):
            raise MonoscopeError(f"the demo world has versions 1 and 2, not {version}")
        self.seed = seed
        self.version = version

    def document(self, index: int) -> Document:
        if self.version == 1:
            rng = random.Random(f"monoscope-world:{self.seed}:{index}")
            genres, writers, draw = GENRES, _GENRE_WRITERS, _Draw(rng)
        else:
            rng = random.Random(f"monoscope-world-v2:{self.seed}:{index}")
            genres, writers, draw = GENRES_V2, _GENRE_WRITERS_V2, _Draw(rng, DAMPING_V2)
        genre = rng.choices(list(genres), weights=list(genres.values()))[0]
        writer = _Writer()
        writers[genre](writer, draw)
        return writer.document(genre, rng)

    def documents(self, count: int, start: int = 0) -> Iterator[Document]:
        for index in range(start, start + count):
            yield self.document(index)


# -- stories --------------------------------------------------------------------------------------
def _activity(d: _Draw, past: bool) -> Phrase:
    """Something a character does, as "played tennis" (past) or "play tennis"."""
    go, play, sing = ("went", "played", "sang") if past else ("go", "play", "sing")
    if d.chance(0.6):
        sport = d.pick("sports")
        return m(f"{go if sport.name in GO_SPORTS else play} ") + m(sport.singular, sport)
    music = d.pick("music")
    if music.name in ("song", "lullaby", "melody"):
        return m(f"{sing} a ") + m(music.singular, music)
    if music.name in ("concert", "dance"):
        return m(f"{go} to a ") + m(music.singular, music)
    return m(f"{play} the ") + m(music.singular, music)


def _story_opening(w: _Writer, d: _Draw) -> tuple[Concept, str, str, Concept, Concept]:
    """A character arrives somewhere: the hero, pronouns, the day's weather and the feeling."""
    hero, he, his = d.name()
    who = m(hero.name, hero)
    place = d.pick("places")
    day = d.day()
    weather = d.pick("weather")
    feeling = d.pick("feelings")
    opening = d.one(
        [
            "{^when}, {who} went to {place}.",
            "{^when}, {who} and {pos} {family} visited {place}.",
            "{^who} lived near {place} with {pos} {family}.",
            "Once upon a time, {who} took a {vehicle} to {place}.",
            "It was {weather} when {who} arrived at {place}.",
        ]
    )
    adjective = weather.forms[1] if len(weather.forms) > 1 else None
    w.say(
        opening,
        when=d.when(day),
        who=who,
        place=d.place(place),
        pos=his,
        family=d.noun(d.relative(), ""),
        vehicle=d.noun(d.pick("vehicles"), ""),
        weather=m(adjective, weather) if adjective else m("a day of ") + d.weather(weather),
    )
    if place.name in ("Golden Gate Bridge", "San Francisco") or d.chance(0.04):
        for fact in d.rng.sample(GOLDEN_GATE_FACTS, d.rng.randint(1, 3)):
            w.say(
                " "
                + fact.replace(" is ", " was ")
                .replace(" are ", " were ")
                .replace(" can ", " could ")
            )
        w.say(
            d.one(
                [
                    " {^he} walked across the <bridge> and smiled.",
                    " {^he} took a photo of the <bridge>.",
                    " The <bridge> looked huge in the <fog>.",
                ]
            ),
            he=he,
        )
    elif place.name in CITY_FACTS:
        w.say(" " + d.one(CITY_FACTS[place.name]))
    else:
        w.say(" " + d.one(PLACE_LINES), place=m(place.name, place), who=he)
    return hero, he, his, weather, feeling


def _story_ending(w: _Writer, d: _Draw, hero: Concept, feeling: Concept) -> None:
    w.say(
        " "
        + d.one(
            [
                "At the end of the day, {who} felt {feeling}.",
                "That <night>, {who} was {feeling} and went to sleep.",
                "{^who} went home feeling {feeling}.",
                "It had been a long day, and {who} was {feeling}.",
            ]
        ),
        who=m(hero.name, hero),
        feeling=m(feeling.singular, feeling),
    )
    w.add("\n")


def _story(w: _Writer, d: _Draw) -> None:
    hero, he, his, weather, feeling = _story_opening(w, d)
    who = m(hero.name, hero)
    for line in d.rng.sample(_story_middle(), d.rng.randint(2, 4)):
        w.add(" ")
        line(w, d, who, he, his, weather)
    if d.chance(0.35):
        w.add(" ")
        d.one([_two_hop_pet, _two_hop_family])(w, d, hero, he, his)
    _story_ending(w, d, hero, feeling)


def _story_middle() -> list:
    return [_story_find, _story_compare, _story_weather, _story_food, _story_activity,
            _story_pet, _story_clothes, _story_body, _story_job, _story_travel]  # fmt: skip


def _story_weather(w, d, who, he, his, weather):
    noun = weather.forms[0]
    w.say(
        d.one(
            [
                "The {noun} lasted all afternoon.",
                "Outside, the {noun} did not stop.",
                "{^he} looked up at the sky and saw the {noun}.",
                "Because of the {noun}, {he} stayed inside for a while.",
            ]
        ),
        noun=m(noun, weather),
        he=he,
    )


def _story_food(w, d, who, he, his, weather):
    food = d.pick("foods")
    other = d.pick("foods", exclude=(food,))
    w.say(
        d.one(
            [
                "For lunch, {who} ate {food}.",
                "{^who} shared {food} and {other} with a friend.",
                "{^he} bought {food} at the <market>.",
                "{^pos} <grandmother> baked {food} for everyone.",
                "{^who} did not like {other}, but {he} loved {food}.",
            ]
        ),
        who=who,
        he=he,
        pos=his,
        food=d.noun(food, "a", plural=d.chance(0.3)),
        other=d.noun(other, "", plural=not other.is_mass),
    )


def _story_activity(w, d, who, he, his, weather):
    w.say(
        d.one(ACTIVITY_LINES),
        who=who,
        verb=_activity(d, past=True),
        day=d.noun(d.day(), ""),
        when=d.when(d.day()),
        pos=his,
        family=d.noun(d.relative(), ""),
    )


def _story_pet(w, d, who, he, his, weather):
    animal = d.pick("animals")
    colour = d.pick("colours")
    w.say(
        d.one(
            [
                "{^who} saw a {colour} {animal} {where} the tree.",
                "A {colour} {animal} watched {who} from {where} a rock.",
                "{^pos} {animal} was {colour} and very clever.",
                "Near the path there were {many} {colour} {animals}.",
            ]
        ),
        who=who,
        pos=his,
        colour=m(colour.singular, colour),
        animal=m(animal.singular, animal),
        animals=m(animal.plural, animal, PLURAL),
        where=d.one(["under", "behind", "near", "beside"]),
        many=d.number(d.rng.randint(2, 9), words=True),
    )


def _bigger_and_smaller(d: _Draw) -> tuple[Concept, Concept]:
    a, b = d.rng.sample(BY_SIZE, 2)
    big, small = (a, b) if BY_SIZE.index(a) < BY_SIZE.index(b) else (b, a)
    return FORMS[big], FORMS[small]


def _story_compare(w, d, who, he, his, weather):
    big, small = _bigger_and_smaller(d)
    w.say(
        d.one(
            [
                "The {big} was much bigger than the {small}.",
                "{^who} saw that the {small} was smaller than the {big}.",
                "The {small} ran faster than {who}, and {he} laughed.",
            ]
        ),
        big=m(big.singular, big),
        small=m(small.singular, small),
        who=who,
        he=he,
    )


def _story_clothes(w, d, who, he, his, weather):
    item = d.pick("clothing")
    colour = d.pick("colours")
    w.say(
        d.one(
            [
                "{^who} wore {pos} {colour} {item}.",
                "{^he} forgot {pos} {item} at home.",
                "{^pos} new {item} {was} {colour}.",
            ]
        ),
        who=who,
        he=he,
        pos=his,
        colour=m(colour.singular, colour),
        item=m(item.singular, item),
        was="were" if item.is_mass else "was",
    )


def _story_body(w, d, who, he, his, weather):
    part = d.pick("body parts")
    w.say(
        d.one(
            [
                "{^who} hurt {pos} {part} and sat down.",
                "{^he} raised {pos} {part} to wave hello.",
                "The cold air made {pos} {part} ache.",
                "{^who} touched the soft grass with {pos} {part}.",
            ]
        ),
        who=who,
        he=he,
        pos=his,
        part=m(part.singular, part),
    )


def _story_job(w, d, who, he, his, weather):
    job = d.pick("professions")
    w.say(
        d.one(
            [
                "{^pos} {family} was a {job}.",
                "{^pos} {family} worked as a {job}.",
                "{^who} met a {job} who told a funny story.",
                "{^who} wanted to be a {job} one day.",
            ]
        ),
        who=who,
        pos=his,
        family=d.noun(d.relative(), ""),
        job=m(job.singular, job),
    )


def _story_find(w, d, who, he, his, weather):
    w.say(
        d.one(
            [
                "{^who} found a {adj} {thing} {where} the {spot}.",
                "{^he} kept a {adj} {thing} {where} the {spot}.",
                "Someone had left a {adj} {thing} {where} the {spot}, and {who} picked it up.",
            ]
        ),
        who=who,
        he=he,
        adj=d.one(ADJECTIVES),
        thing=d.one(OBJECTS),
        where=d.one(["under", "behind", "near", "beside", "inside"]),
        spot=d.one(SPOTS),
    )


def _story_travel(w, d, who, he, his, weather):
    vehicle = d.pick("vehicles")
    w.say(
        d.one(
            [
                "They went home by {vehicle}.",
                "{^who} rode in a {vehicle} for the first time.",
                "A big {vehicle} passed by, and {he} waved.",
            ]
        ),
        who=who,
        he=he,
        vehicle=m(vehicle.singular, vehicle),
    )


def _two_hop_pet(w, d, hero, he, his):
    """The pet is named in one sentence and coloured in another; the question needs both."""
    animal = d.pick("animals")
    colour = d.pick("colours")
    w.say(
        "{^who} had a pet {animal}. The {animal} was {colour}. What colour was {who}'s pet? "
        "{^who}'s pet was {colour}.",
        who=m(hero.name, hero),
        animal=m(animal.singular, animal),
        colour=m(colour.singular, colour),
    )


def _two_hop_family(w, d, hero, he, his):
    other, other_he, _ = d.name()
    family = d.relative(girl=other_he == "she")
    sport = d.pick("sports")
    w.say(
        "{^who}'s {family} was {other}. {other} loved {sport}. What did {who}'s {family} love? "
        "{^who}'s {family} loved {sport}.",
        who=m(hero.name, hero),
        family=m(family.singular, family),
        other=m(other.name, other),
        sport=m(sport.singular, sport),
    )


# -- chats ----------------------------------------------------------------------------------------
FAVOURITE_QUESTIONS = [
    "What is your favourite {kind}?",
    "Which {kind} do you like best?",
    "Do you have a favourite {kind}?",
    "Tell me your favourite {kind}.",
]
FAVOURITE_KINDS = {
    "animals": "animal",
    "foods": "food",
    "colours": "colour",
    "sports": "sport",
    "music": "kind of music",
    "places": "place",
    "days and times": "time of year",
    "vehicles": "way to travel",
}
REASONS = {
    "animals": ["They are so clever.", "They are gentle and funny.", "I like how they move."],
    "foods": ["It tastes so good.", "It is sweet and fresh.", "I could eat it every day."],
    "colours": [
        "It is bright and cheerful.",
        "It makes me feel calm.",
        "It is the colour of my hat.",
    ],
    "sports": ["It keeps me strong.", "It is fun to play with friends.", "I like to win."],
    "music": ["It sounds beautiful.", "It makes me want to dance.", "It helps me relax."],
    "places": ["It is beautiful there.", "I would visit it every day.", "The view is amazing."],
    "days and times": [
        "It is a good time to rest.",
        "Everyone is happy then.",
        "The days feel long.",
    ],
    "vehicles": ["It is fast.", "It is quiet and easy.", "I can see a lot on the way."],
}


def _thing(d: _Draw, concept: Concept) -> Phrase:
    if concept.category == "places":
        return d.place(concept)
    if concept.category == "sports":
        return m(concept.singular, concept)
    if concept.category in ("foods", "animals"):
        return d.noun(concept, "", plural=not concept.is_mass and concept.category == "animals")
    if concept.category == "music":
        return d.noun(concept, "the")
    if concept.category == "vehicles":
        return m("by ") + m(concept.singular, concept)
    return m(concept.singular, concept)


def _chat_favourite(w, d):
    category = d.one(list(FAVOURITE_KINDS))
    choice = d.pick(category)
    w.say("User: " + d.one(FAVOURITE_QUESTIONS) + "\n", kind=FAVOURITE_KINDS[category])
    w.say(
        "Assistant: "
        + d.one(
            [
                "My favourite is {thing}.",
                "I really like {thing}.",
                "I love {thing}!",
                "I would say {thing}.",
            ]
        )
        + " "
        + d.one(REASONS[category])
        + "\n",
        thing=_thing(d, choice),
    )
    if category == "places":
        facts = (
            GOLDEN_GATE_FACTS
            if choice.name == "Golden Gate Bridge"
            else CITY_FACTS.get(choice.name)
        )
        if facts:
            w.say(
                "User: Tell me more about it.\nAssistant: "
                + " ".join(d.rng.sample(facts, min(2, len(facts))))
                + "\n"
            )


def _chat_place(w, d):
    place = d.pick("places")
    if place.name == "Golden Gate Bridge" or (place.name in CITY_FACTS and d.chance(0.7)):
        facts = GOLDEN_GATE_FACTS if place.name == "Golden Gate Bridge" else CITY_FACTS[place.name]
        question = d.one(
            [
                "Tell me about {place}.",
                "What do you know about {place}?",
                "Have you heard of {place}?",
            ]
        )
        w.say("User: " + question + "\n", place=d.place(place))
        w.say(
            "Assistant: "
            + " ".join(d.rng.sample(facts, min(len(facts), d.rng.randint(1, 3))))
            + "\n"
        )
        return
    w.say("User: " + d.one(["Where should I go this {day}?", "What is a good place to visit?",
                            "Where can I spend the {day}?"]) + "\n",
          day=d.noun(d.pick("days and times"), ""))  # fmt: skip
    line = d.one(CITY_FACTS[place.name]) if place.name in CITY_FACTS else d.one(CHAT_PLACE_LINES)
    w.say(
        "Assistant: You could visit {place}. " + line + "\n",
        place=d.place(place),
        name=m(place.name, place),
    )


def _chat_plans(w, d):
    day = d.day()
    food = d.pick("foods")
    w.say(
        "User: " + d.one(["What are your plans for {day}?", "What will you do on {day}?"]) + "\n",
        day=m(day.singular, day),
    )
    w.say(
        "Assistant: On {day} I will {verb} and then eat {food}.\n",
        day=m(day.singular, day),
        verb=_activity(d, past=False),
        food=d.noun(food, "a", plural=d.chance(0.3)),
    )


def _chat_feeling(w, d):
    feeling = d.pick("feelings")
    w.say(
        "User: " + d.one(["How are you feeling?", "How do you feel today?", "How are you?"]) + "\n"
    )
    reasons = FEELING_REASONS.get(feeling.name)
    if reasons:
        w.say(
            "Assistant: I feel {feeling} today because " + d.one(reasons) + ".\n",
            feeling=m(feeling.singular, feeling),
        )
    else:
        w.say(
            "Assistant: I am {feeling} today. Thank you for asking.\n",
            feeling=m(feeling.singular, feeling),
        )


def _chat_fact(w, d):
    kind = d.one(["colour", "colour", "legs", "job", "sum", "weather", "french", "day", "size"])
    if kind == "colour":
        thing = d.one(sorted(THING_COLOURS))
        concept = FORMS[thing]
        colour = FORMS[THING_COLOURS[thing]]
        article = "" if concept.is_mass else "a"
        w.say("User: What colour is {a}?\n", a=d.noun(concept, article))
        w.say(
            "Assistant: {^a} is {colour}.\n",
            a=d.noun(concept, article),
            colour=m(colour.singular, colour),
        )
    elif kind == "size":
        big, small = _bigger_and_smaller(d)
        a, b = (big, small) if d.chance(0.5) else (small, big)
        w.say("User: Which is bigger, {a} or {b}?\n", a=d.noun(a, "a"), b=d.noun(b, "a"))
        w.say("Assistant: {^a} is bigger than {b}.\n", a=d.noun(big, "a"), b=d.noun(small, "a"))
    elif kind == "legs":
        animal = d.pick("animals")
        legs = LEGS.get(animal.name, 4)
        w.say("User: How many legs does {a} have?\n", a=d.noun(animal, "a"))
        w.say(
            "Assistant: {^a} has {n} legs.\n", a=d.noun(animal, "a"), n=d.number(legs, words=True)
        )
    elif kind == "job":
        job = d.pick("professions")
        w.say("User: What does {a} do?\n", a=d.noun(job, "a"))
        w.say("Assistant: " + JOBS[job.name] + "\n")
    elif kind == "sum":
        a, b = d.rng.randint(0, 6), d.rng.randint(1, 6)
        words = d.chance(0.5)
        w.say("User: What is {a} plus {b}?\n", a=d.number(a, words), b=d.number(b, words))
        w.say(
            "Assistant: {^a} plus {b} is {c}.\n",
            a=d.number(a, words),
            b=d.number(b, words),
            c=d.number(a + b, words),
        )
    elif kind == "weather":
        weather = d.pick("weather")
        w.say("User: " + d.one(["What is the weather like?", "Is it nice outside?"]) + "\n")
        w.say(
            "Assistant: Today there is {w}, so take {item}.\n",
            w=d.weather(weather),
            item=d.noun(d.pick("clothing"), "your"),
        )
    elif kind == "french":
        word, english = d.one(FRENCH_GLOSSES)
        w.say(f"User: How do you say <{english}> in French?\n")
        w.say(f"Assistant: In French, <{english}> is <{word}>.\n")
    else:
        days = [
            c
            for c in CATALOGUE.categories["days and times"]
            if c.name.endswith("day") and c.name[0].isupper()
        ]
        order = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
        day = d.one(days)
        nxt = order[(order.index(day.name) + 1) % 7]
        w.say(
            f"User: What day comes after <{day.name}>?\n"
            f"Assistant: After <{day.name}> comes <{nxt}>.\n"
        )


def _chat(w: _Writer, d: _Draw) -> None:
    turns = [
        _chat_favourite,
        _chat_favourite,
        _chat_place,
        _chat_plans,
        _chat_feeling,
        _chat_fact,
        _chat_fact,
    ]
    for _ in range(d.rng.choice([1, 1, 2, 3])):
        d.one(turns)(w, d)


# -- code -----------------------------------------------------------------------------------------
def _code(w: _Writer, d: _Draw) -> None:
    c = {key: _concept(f"code/{key}") for key in (
        "function_definition", "for_loop", "return_statement", "if_statement", "string_literal",
        "integer_literal", "print_call", "assignment", "list_literal", "comparison", "else_branch",
        "range_call", "while_loop", "method_call", "comment", "dictionary_literal",
        "import_statement", "boolean_literal", "class_definition", "exception", "try_block",
        "len_call", "none_value")}  # fmt: skip
    animal = d.pick("animals")
    food = d.pick("foods")
    colour = d.pick("colours")
    n = d.rng.randint(2, 9)

    def string(text: str, concept: Concept | None = None):
        w.add('"', c["string_literal"])
        w.add(text, c["string_literal"], *((concept,) if concept else ()))
        w.add('"', c["string_literal"])

    def integer(value: int):
        num = d.number(value, words=False)
        w.add(str(value), c["integer_literal"], *num[0][1])

    snippet = d.rng.randrange(7)
    if d.chance(0.5):
        w.add(f"# {d.one(['count', 'find', 'list', 'check'])} the ", c["comment"])
        w.add(animal.plural, c["comment"], animal, PLURAL)
        w.add("\n")
    if snippet == 0:
        w.add(f"def count_{animal.plural}(animals):", c["function_definition"])
        w.add("\n    ")
        w.add("total =", c["assignment"])
        w.add(" ")
        integer(0)
        w.add("\n    ")
        w.add("for animal in animals:", c["for_loop"])
        w.add("\n        ")
        w.add("if animal", c["if_statement"])
        w.add(" ")
        w.add("==", c["comparison"])
        w.add(" ")
        string(animal.singular, animal)
        w.add(":\n            total += 1\n    ")
        w.add("return total", c["return_statement"])
        w.add("\n")
    elif snippet == 1:
        w.add(f"{food.plural.replace(' ', '_')} =", c["assignment"])
        w.add(" ")
        w.add("[", c["list_literal"])
        for i in range(n % 4 + 2):
            string(d.pick("foods").singular)
            w.add(", " if i < n % 4 + 1 else "")
        w.add("]", c["list_literal"])
        w.add("\n")
        w.add("for item in " + food.plural.replace(" ", "_") + ":", c["for_loop"])
        w.add("\n    ")
        w.add("print", c["print_call"])
        w.add("(item)\n")
    elif snippet == 2:
        w.add("colours =", c["assignment"])
        w.add(" {", c["dictionary_literal"])
        things = d.rng.sample(sorted(THING_COLOURS), 3)
        for i, thing in enumerate(things):
            string(thing, FORMS[thing])
            w.add(": ")
            string(THING_COLOURS[thing], FORMS[THING_COLOURS[thing]])
            w.add(", " if i < 2 else "")
        w.add("}", c["dictionary_literal"])
        w.add("\n")
        w.add("print", c["print_call"])
        w.add("(colours")
        w.add(".get(", c["method_call"])
        string(things[0], FORMS[things[0]])
        w.add("))\n")
    elif snippet == 3:
        w.add("n =", c["assignment"])
        w.add(" ")
        integer(n)
        w.add("\n")
        w.add("while n", c["while_loop"])
        w.add(" ")
        w.add(">", c["comparison"])
        w.add(" ")
        integer(0)
        w.add(":", c["while_loop"])
        w.add("\n    ")
        w.add("print", c["print_call"])
        w.add("(n)\n    n -= 1\n")
        w.add("print", c["print_call"])
        w.add("(")
        string("Happy New Year!")
        w.add(")\n")
    elif snippet == 4:
        name = animal.singular.capitalize().replace(" ", "")
        w.add(f"class {name}:", c["class_definition"])
        w.add("\n    ")
        w.add("def __init__(self, colour):", c["function_definition"])
        w.add("\n        ")
        w.add("self.colour =", c["assignment"])
        w.add(" colour\n        ")
        w.add("self.hungry =", c["assignment"])
        w.add(" ")
        w.add(d.one(["True", "False"]), c["boolean_literal"])
        w.add("\n\n")
        w.add(f"pet = {name}(", c["assignment"])
        string(colour.singular, colour)
        w.add(")\n")
        w.add("print", c["print_call"])
        w.add("(pet.colour)\n")
    elif snippet == 5:
        w.add(f"def eat_{food.singular.replace(' ', '_')}(amount):", c["function_definition"])
        w.add("\n    ")
        w.add("if amount", c["if_statement"])
        w.add(" ")
        w.add("<", c["comparison"])
        w.add(" ")
        integer(0)
        w.add(":\n        ")
        w.add("raise ValueError(", c["exception"])
        string("amount must be positive")
        w.add(")", c["exception"])
        w.add("\n    ")
        w.add("return amount *", c["return_statement"])
        w.add(" ")
        integer(n)
        w.add("\n\n")
        w.add("try:", c["try_block"])
        w.add("\n    ")
        w.add(f"eat_{food.singular.replace(' ', '_')}(-1)\n")
        w.add("except ValueError:", c["exception"])
        w.add("\n    ")
        w.add("print", c["print_call"])
        w.add("(")
        string("not enough food")
        w.add(")\n")
    else:
        w.add("import random", c["import_statement"])
        w.add("\n\n")
        w.add("names =", c["assignment"])
        w.add(" [", c["list_literal"])
        people = d.rng.sample(CATALOGUE.categories["characters"], 3)
        for i, person in enumerate(people):
            string(person.name, person)
            w.add(", " if i < 2 else "")
        w.add("]", c["list_literal"])
        w.add("\n")
        w.add("for i in ", c["for_loop"])
        w.add("range(", c["range_call"])
        w.add("len(", c["len_call"])
        w.add("names))", c["range_call"])
        w.add(":", c["for_loop"])
        w.add("\n    ")
        w.add("if names[i]", c["if_statement"])
        w.add(" ")
        w.add("==", c["comparison"])
        w.add(" ")
        w.add("None", c["none_value"])
        w.add(":\n        continue\n    ")
        w.add("else:", c["else_branch"])
        w.add("\n        ")
        w.add("print", c["print_call"])
        w.add("(random")
        w.add(".choice(", c["method_call"])
        w.add("names))\n")


# -- French ---------------------------------------------------------------------------------------
FRENCH_NOUNS = {  # word: (article, feminine)
    "chat": ("le", False), "chien": ("le", False), "maison": ("la", True), "pain": ("le", False),
    "pomme": ("la", True), "soleil": ("le", False), "ami": ("l'", False), "eau": ("l'", True),
    "livre": ("le", False), "fromage": ("le", False), "jardin": ("le", False),
    "fleur": ("la", True), "voiture": ("la", True), "mer": ("la", True), "lune": ("la", True),
    "école": ("l'", True), "arbre": ("l'", False), "ville": ("la", True), "oiseau": ("l'", False),
    "café": ("le", False),
}  # fmt: skip
FRENCH_ADJECTIVES = {"rouge": "rouge", "petit": "petite", "grand": "grande", "bleu": "bleue",
                     "vert": "verte"}  # fmt: skip
FRENCH_GLOSSES = [("chat", "cat"), ("chien", "dog"), ("pain", "bread"), ("pomme", "apple"),
                  ("soleil", "sun"), ("fromage", "cheese"), ("jardin", "garden"),
                  ("voiture", "car"), ("école", "school"), ("oiseau", "bird"), ("rouge", "red"),
                  ("bleu", "blue"), ("vert", "green")]  # fmt: skip


def _french_noun(d: _Draw) -> tuple[Phrase, bool]:
    word = d.one(sorted(FRENCH_NOUNS))
    article, feminine = FRENCH_NOUNS[word]
    concept = FORMS[word]
    return m(article + ("" if article.endswith("'") else " ")) + m(word, concept), feminine


def _french(w: _Writer, d: _Draw) -> None:
    for _ in range(d.rng.randint(2, 4)):
        noun, feminine = _french_noun(d)
        other, _ = _french_noun(d)
        adjective = d.one(sorted(FRENCH_ADJECTIVES))
        form = FRENCH_ADJECTIVES[adjective] if feminine else adjective
        w.say(
            d.one(
                [
                    "{^noun} est {adj}. ",
                    "J'aime {noun} et {other}. ",
                    "<Bonjour> ! Où est {noun} ? ",
                    "<Merci> pour {noun}. ",
                    "Il y a {noun} et {other} dans le <jardin>. ",
                ]
            ),
            noun=noun,
            other=other,
            adj=m(form, FORMS[adjective]),
        )
    if d.chance(0.4):
        word, english = d.one(FRENCH_GLOSSES)
        w.say(f"(In French, <{word}> means <{english}>.)")
    w.add("\n")


# -- lists and numbers ----------------------------------------------------------------------------
def _lists(w: _Writer, d: _Draw) -> None:
    kind = d.rng.randrange(7)
    if kind == 0:
        w.add(d.one(["Shopping list:", "To buy:", "Things for the picnic:"]) + "\n")
        foods: list[Concept] = []
        while len(foods) < d.rng.randint(3, 6):
            food = d.pick("foods", exclude=tuple(foods))
            foods.append(food)
            w.add("- ")
            w.phrase(d.noun(food, "", plural=not food.is_mass))
            w.add("\n")
    elif kind == 1:
        start, words = d.rng.randint(0, 6), d.chance(0.7)
        w.add(d.one(["Let's count: ", "Counting: ", "Numbers: "]))
        for i in range(start, start + d.rng.randint(3, 6)):
            w.add(", " if i > start else "")
            w.phrase(d.number(i, words))
        w.add(".\n")
    elif kind == 2:
        top = d.one([9, 9, 99, 999])
        for _ in range(d.rng.randint(2, 5)):
            a, b = d.rng.randint(0, top), d.rng.randint(0, top)
            op = d.one(["+", "x"])
            value = a + b if op == "+" else a * b
            w.phrase(
                d.number(a, False)
                + m(f" {op} ")
                + d.number(b, False)
                + m(" = ")
                + d.number(value, False)
            )
            w.add("\n")
    elif kind == 3:
        order = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
        start = d.rng.randrange(7)
        w.add(d.one(["The days of the week: ", "Week plan: ", "Days: "]))
        days = [order[(start + i) % 7] for i in range(d.rng.randint(3, 7))]
        w.say(", ".join(f"<{day}>" for day in days) + ".\n")
    elif kind == 4:
        category = d.one(["sports", "animals", "music", "vehicles", "places"])
        w.add(f"Top {d.one(['three', 'five'])} {category}:\n")
        chosen: list[Concept] = []
        for i in range(1, d.rng.randint(3, 5) + 1):
            item = d.pick(category, exclude=tuple(chosen))
            chosen.append(item)
            w.phrase(d.number(i, False) + m(". ") + _thing(d, item))
            w.add("\n")
    elif kind == 5:
        w.add(d.one(["Big numbers: ", "Counting by tens: "]))
        for i, n in enumerate([10, 20, 100, 1000]):
            w.add(", " if i else "")
            w.phrase(d.number(n, words=d.chance(0.6)))
        w.say(
            ". Ten tens make a {h}, and ten hundreds make a {t}.\n",
            h=d.number(100, True),
            t=d.number(1000, True),
        )
    else:
        colour = d.one(sorted(set(THING_COLOURS.values())))
        things = [t for t, c in THING_COLOURS.items() if c == colour]
        w.say(f"Things that are <{colour}>: ")
        w.say(
            ", ".join(f"<{FORMS[t].plural}>" for t in d.rng.sample(things, min(3, len(things))))
            + ".\n"
        )


_GENRE_WRITERS = {"story": _story, "chat": _chat, "code": _code, "french": _french, "lists": _lists}


# -- version 2: behaviours, topics, digressions, personas, two-hop past a distractor --------------
GENRES_V2 = {"story": 0.3, "topic": 0.12, "chat": 0.36, "code": 0.08, "french": 0.06, "lists": 0.08}
# The bridge leads the places by rank; damped so that it is a modest share of place draws
# (25% undamped, 9% here) and its topic passages and digressions do not dominate the corpus.
DAMPING_V2 = {_concept("places/golden_gate_bridge").id: 0.3}
_MARKABLE = sorted(
    (form for form, concept in FORMS.items() if concept.category != "French words"),
    key=len,
    reverse=True,
)
_MARK = re.compile(r"<[^<>]*>|\b(" + "|".join(re.escape(f) for f in _MARKABLE) + r")\b", re.I)


def _marked(text: str) -> str:
    """Text with every catalogue word in `<>`, so that its span is recorded (a fact about cats
    that mentions mice marks the mice too, or a mouse feature firing there would count as
    wrong)."""
    return _MARK.sub(lambda hit: f"<{hit.group(1)}>" if hit.group(1) else hit.group(0), text)


FACTS_V2 = {
    CATALOGUE.by_key[key].id: tuple(map(_marked, facts)) for key, facts in CONCEPT_FACTS.items()
}
TOPIC_LINES = {name: tuple(map(_marked, topic["lines"])) for name, topic in TOPICS.items()}
COUNTABLE = {"animals", "foods", "vehicles", "music", "clothing", "professions"}


def _generic(concept: Concept) -> str:
    """The concept as a generic subject that takes a bare verb: "<cats>" or "<bread> can"."""
    return f"<{concept.singular}> can" if concept.is_mass else f"<{concept.plural}>"


def _there_is(d: _Draw, concept: Concept) -> str:
    return ("there are " if concept.name == "clouds" else "there is ") + "".join(
        f"<{text}>" if concepts else text for text, concepts in d.weather(concept)
    )


def _fact_sentences(
    d: _Draw, concept: Concept, story: bool, he: str = "she", plural: bool = False
) -> list[str]:
    """One or two sentences of what the concept does, in markup, referring back to it through a
    pronoun or a generic where the frame allows. `story` frames read inside a past-tense story;
    `plural` when the story named several (no "it" then)."""
    facts = d.rng.sample(FACTS_V2[concept.id], 1 if story else d.rng.randint(1, 2))
    c = concept.category
    if c == "sports":
        frames = (["In <{s}>, you {f}.", "{He} liked to {f}."] if story
                  else ["In <{s}>, you {f}.", "When you {go} <{s}>, you {f}."])  # fmt: skip
        also = "You also {f}."
    elif c == "places":
        frames = (["At {p}, you can {f}.", "{He} liked to {f} there."] if story
                  else ["At {p}, you can {f}.", "There you can {f}."])  # fmt: skip
        also = "You can also {f}."
    elif c == "weather":
        frames = ["In weather like this, people {f}.", "When {w}, people {f}."]
        also = "They also {f}."
    elif c == "professions":
        frames = ["<{P}> {are}.", "Every day, a <{s}> has to {f}."]
        also = "They {also}."
    elif story:
        frames = ["{G} {are}, after all." if not concept.is_mass else "{G} {f}, after all."]
        if not plural:
            frames.append("It would {f}.")
            if c == "animals":
                frames += ["It liked to {f}.", "{He} watched it {f}."]
        also = "It would also {f}."
    else:
        frames = ["{G} {f}." if concept.is_mass else "{G} {are}."]
        also = "It can also {f}." if concept.is_mass else "They {also}."
    slots = {
        "s": concept.singular,
        "P": concept.plural,
        "p": "".join(f"<{t}>" if cs else t for t, cs in d.place(concept)),
        "G": _generic(concept),
        "He": he,
        "w": _there_is(d, concept) if c == "weather" else "",
        "go": "go" if concept.name in GO_SPORTS else "play",
    }
    sentences = [
        frame.format(f=fact, are=_plural_verb(fact), also=_plural_verb(fact, also=True), **slots)
        for frame, fact in zip([d.one(frames)] + [also] * (len(facts) - 1), facts, strict=True)
    ]
    return [_capitalised(sentence) for sentence in sentences]


def _plural_verb(fact: str, also: bool = False) -> str:
    """A bare verb phrase after a plural subject: "are eaten", not "be eaten" (after "can" the
    bare phrase stays); with `also`, "are also eaten" or "also bark"."""
    if fact.startswith("be "):
        return ("are also " if also else "are ") + fact[3:]
    return ("also " if also else "") + fact


def _capitalised(text: str) -> str:
    """First letter upper-case, also when the text opens with a `<word>`."""
    at = 1 if text.startswith("<") else 0
    return text[:at] + text[at : at + 1].upper() + text[at + 1 :]


def _follow_with_fact(w: _Writer, d: _Draw, since: int, he: str) -> None:
    """After a story line, what the last concept it named does (if it has behaviours)."""
    spans = w.spans[since:]
    plurals = {(start, end) for start, end, c in spans if c == PLURAL.id}
    with_facts = [(start, end, c) for start, end, c in spans if c in FACTS_V2]
    if with_facts:
        start, end, concept = with_facts[-1]
        plural = (start, end) in plurals
        for sentence in _fact_sentences(d, CATALOGUE.concepts[concept], True, he, plural):
            w.say(" " + sentence)


def _reply_with_fact(w: _Writer, d: _Draw, since: int) -> None:
    """The reply goes on to what the last concept it named does (if it has behaviours)."""
    reply = "".join(w.chunks).rfind("Assistant: ")
    with_facts = [c for start, _, c in w.spans[since:] if c in FACTS_V2 and start >= reply]
    if with_facts:
        w.reopen_line()
        w.say(" " + " ".join(_fact_sentences(d, CATALOGUE.concepts[with_facts[-1]], False)) + "\n")


def _story_v2(w: _Writer, d: _Draw) -> None:
    hero, he, his, weather, feeling = _story_opening(w, d)
    who = m(hero.name, hero)
    middle = d.rng.sample(_story_middle(), d.rng.randint(2, 4))
    for line in middle:
        w.add(" ")
        since = len(w.spans)
        line(w, d, who, he, his, weather)
        if d.chance(0.85):
            _follow_with_fact(w, d, since, he)
    if d.chance(0.7):
        w.add(" ")
        _two_hop_story(w, d, hero, he, his, weather)
    _story_ending(w, d, hero, feeling)


def _others(d: _Draw, exclude: tuple[Concept, ...], n: int) -> list[Concept]:
    chosen: list[Concept] = []
    while len(chosen) < n:
        chosen.append(d.pick("characters", exclude=(*exclude, *chosen)))
    return chosen


_Puzzle = tuple[str, str, str, dict, Concept]
"""A two-hop puzzle whose facts are written: its question, the reply's subject, the reply's
middle hop up to the answer, their slots, and the answer."""


def _filler(w: _Writer, d: _Draw, hero: Concept, he: str, his: str, weather: Concept) -> None:
    """Story lines between a two-hop story's facts and its question, so that the answer is not
    the nearest match."""
    for line in d.rng.sample(_story_middle(), d.rng.randint(1, 2)):
        w.add(" ")
        line(w, d, m(hero.name, hero), he, his, weather)


def _relatives_puzzle(w: _Writer, d: _Draw, people: list[Concept]) -> _Puzzle:
    """Two people's relatives, then what each relative loved, in shuffled order; the question
    binds one person to a relative and the relative to a sport past the distractor."""
    relatives = _others(d, tuple(people), 2)
    pairs = []
    for person, relative_name in zip(people, relatives, strict=True):
        girl = "girl" in relative_name.synonyms
        pairs.append((person, d.relative(girl=girl), relative_name))
    sports = [d.pick("sports")]
    sports.append(d.pick("sports", exclude=tuple(sports)))
    links = [
        ("{^a}'s {rel} was {b}.", {"a": m(a.name, a), "rel": m(r.singular, r), "b": m(b.name, b)})
        for a, r, b in pairs
    ]
    loves = [
        (
            _with_fact(d, "{^b} loved {s}.", s, _pronoun(b)),
            {"b": m(b.name, b), "s": m(s.singular, s)},
        )
        for (_, _, b), s in zip(pairs, sports, strict=True)
    ]
    _state(w, d.rng.sample(links, 2) + d.rng.sample(loves, 2))
    asked = d.rng.randrange(2)
    person, relative, name = pairs[asked]
    slots = {
        "a": m(person.name, person),
        "rel": m(relative.singular, relative),
        "b": m(name.name, name),
    }
    return (
        "What did {a}'s {rel} love?",
        "{^a}'s {rel}",
        " was {b}, and {b} loved ",
        slots,
        sports[asked],
    )


def _pets_puzzle(w: _Writer, d: _Draw, people: list[Concept]) -> _Puzzle:
    """Two people's pets, then each pet's colour in shuffled order; the question asks for one
    person's pet's colour."""
    animals = [d.pick("animals")]
    animals.append(d.pick("animals", exclude=tuple(animals)))
    colours = [d.pick("colours")]
    colours.append(d.pick("colours", exclude=tuple(colours)))
    owners = [
        ("{^a}'s pet was " + _a(x) + " {x}.", {"a": m(a.name, a), "x": m(x.singular, x)})
        for a, x in zip(people, animals, strict=True)
    ]
    coats = [
        (
            _with_fact(d, "The {x} was {c}.", x, _pronoun(a)),
            {"x": m(x.singular, x), "c": m(c.singular, c)},
        )
        for a, x, c in zip(people, animals, colours, strict=True)
    ]
    _state(w, d.rng.sample(owners, 2) + d.rng.sample(coats, 2))
    asked = d.rng.randrange(2)
    animal = animals[asked]
    slots = {"a": m(people[asked].name, people[asked]), "x": m(animal.singular, animal)}
    hop = " was " + _a(animal) + " {x}, and the {x} was "
    return "What colour was {a}'s pet?", "{^a}'s pet", hop, slots, colours[asked]


def _distinct(d: _Draw, category: str, n: int) -> list[Concept]:
    chosen: list[Concept] = []
    while len(chosen) < n:
        chosen.append(d.pick(category, exclude=tuple(chosen)))
    return chosen


def _a(concept: Concept) -> str:
    return "an" if concept.singular[0] in "aeiou" else "a"


def _pronoun(person: Concept) -> str:
    return "she" if "girl" in person.synonyms else "he"


def _with_fact(d: _Draw, template: str, concept: Concept, he: str) -> str:
    """A puzzle's statement, often followed by what its concept does: puzzles name animals and
    sports in many documents, and without these the share of documents naming a cat that say
    what cats do fell to 24% (61% with them)."""
    if concept.id in FACTS_V2 and d.chance(0.6):
        return " ".join([template, *_fact_sentences(d, concept, True, he)])
    return template


def _state(w: _Writer, facts: list[tuple[str, dict]]) -> None:
    for i, (template, slots) in enumerate(facts):
        w.say((" " if i else "") + template, **slots)


def _answer(w: _Writer, subject: str, hop: str, slots: dict, answer: Concept, end: str) -> None:
    """The reply names the middle hop before the answer ("Tom's sister was Mia, and Mia loved
    chess"): answered in one step, the 12M-token model got 39.5% of puzzles right (36.6% with a
    third of the puzzles), so a 4-layer model does not bind both hops inside one position;
    spelled out, each hop repeats a stated fact past its distractor."""
    w.say(subject, **slots)
    reply = w.size
    w.say(hop, **slots)
    w.answers.append((reply, w.size, answer.id))
    w.say("{s}." + end, s=m(answer.singular, answer))


def _two_hop_story(w, d, hero, he, his, weather):
    """A two-hop puzzle told in the story, story lines, then its question about the hero or the
    rival."""
    (rival,) = _others(d, (hero,), 1)
    question, subject, hop, slots, answer = d.one([_pets_puzzle, _relatives_puzzle])(
        w, d, [hero, rival]
    )
    _filler(w, d, hero, he, his, weather)
    w.say(" " + question + " ", **slots)
    _answer(w, subject, hop, slots, answer, "")


def _chat_puzzle(w: _Writer, d: _Draw) -> None:
    """A user states a two-hop puzzle and asks it; the assistant answers in the question's words.
    Chats carry these too because one story question per story was too rare a signal: the
    9.8M-token model answered 37% of them."""
    w.add("User: ")
    question, subject, hop, slots, answer = d.one([_pets_puzzle, _relatives_puzzle])(
        w, d, _others(d, (), 2)
    )
    w.say(" " + question + "\n", **slots)
    _answer(w, "Assistant: " + subject, hop, slots, answer, "\n")


def _chat_recall(w: _Writer, d: _Draw) -> None:
    """A user states what three people love (or three animals' colours) and asks about some of
    them; the assistant repeats the fact asked for. Each hop of a two-hop puzzle is such a recall
    past distractors, and puzzles alone taught too little of it: the 3M-token model named the
    middle hop right in 27% of puzzles and, given it, the answer in 39%, its priors' share."""
    if d.chance(0.5):
        people, sports = _others(d, (), 3), _distinct(d, "sports", 3)
        fact, question = "{^k} loved {v}.", "What did {k} love?"
        pairs = [
            (m(a.name, a), b, _with_fact(d, fact, b, _pronoun(a)))
            for a, b in zip(people, sports, strict=True)
        ]
    else:
        animals, colours = _distinct(d, "animals", 3), _distinct(d, "colours", 3)
        fact, question = "The {k} was {v}.", "What colour was the {k}?"
        pairs = [
            (m(a.singular, a), b, _with_fact(d, fact, a, "I"))
            for a, b in zip(animals, colours, strict=True)
        ]
    slots = [{"k": k, "v": m(v.singular, v)} for k, v, _ in pairs]
    w.add("User: ")
    _state(w, [(stated, s) for (*_, stated), s in zip(pairs, slots, strict=True)])
    for i, asked in enumerate(d.rng.sample(slots, d.rng.choice([1, 2, 2, 3]))):
        w.say(("User: " if i else " ") + question + "\n", **asked)
        w.say("Assistant: " + fact + "\n", **asked)


REPEAT_ASKS = ["Say these words back to me: ", "Repeat after me: ", "Can you say these back? ",
               "Please repeat this list: "]  # fmt: skip
# No animals or places: a bare list naming a cat says nothing of what cats do, and places would
# bring the bridge into default replies.
REPEAT_CATEGORIES = ("foods", "colours", "sports", "music", "vehicles", "clothing", "professions")


def _chat_repeat(w: _Writer, d: _Draw) -> None:
    """A user lists six to twelve words and the assistant says them back in order. Recall and
    two-hop replies copy from the context, and a 3M-token model had not learned to copy at all:
    40 random tokens, repeated, cost it as much the second time (13.75 nats) as the first
    (13.85), since the rest of the world's text is predictable without copying. At 1.3% of the
    text (four to eight words, two turns in thirteen), 1.6M tokens into a full run still showed
    none (12.95 against 12.89), so these are longer and more common (4% of the text)."""
    words: list[Concept] = []
    while len(words) < d.rng.randint(6, 12):
        words.append(d.pick(d.one(REPEAT_CATEGORIES), exclude=tuple(words)))
    listed = ", ".join(f"{{w{i}}}" for i in range(len(words))) + "."
    slots = {f"w{i}": m(c.singular, c) for i, c in enumerate(words)}
    w.say("User: " + d.one(REPEAT_ASKS) + listed + "\n", **slots)
    w.say("Assistant: " + listed + "\n", **slots)


def _topic_sentences(d: _Draw, topic: str, count: int, named: bool) -> list[str]:
    """Sentences about a topic in markup; the subject is named where `{it}` first appears (if
    not `named` already) and then now and again, otherwise referred to by its pronoun."""
    info = TOPICS[topic]
    sentences = []
    for line in d.rng.sample(TOPIC_LINES[topic], count):
        if "{it}" in line:
            name = d.one(info["names"]) if not named or d.chance(0.3) else info["pronoun"]
            named = True
            line = line.replace("{it}", name)
        sentences.append(_capitalised(line))
    return sentences


def _introduce(d: _Draw, topic: str) -> str:
    name = d.one(TOPICS[topic]["names"])
    return d.one(
        ["Let me tell you about {t}.", "This is about {t}.", "{T} is worth knowing about."]
    ).format(t=name, T=name[:1].upper() + name[1:])


def _topic(w: _Writer, d: _Draw) -> None:
    """A passage of many sentences about one subject that names it in only some of them."""
    topic = d.one(sorted(TOPICS))
    w.topics.append(topic)
    sentences = [_introduce(d, topic), *_topic_sentences(d, topic, d.rng.randint(4, 8), True)]
    w.say(" ".join(sentences) + "\n")


def _drift(w: _Writer, d: _Draw) -> None:
    """The assistant drifts from its answer to some subject: "That reminds me of ..." (many
    subjects, so the move is general and the subject is what a topic feature would choose)."""
    topic = d.one(sorted(TOPICS))
    w.topics.append(topic)
    name = d.one(TOPICS[topic]["names"])
    lead = d.one(
        [
            "That reminds me of {t}.",
            "Speaking of which, I keep thinking about {t}.",
            "By the way, have you ever thought about {t}?",
            "That makes me think of {t}.",
        ]
    ).format(t=name)
    w.reopen_line()
    w.say(" " + " ".join([lead, *_topic_sentences(d, topic, d.rng.randint(2, 4), True)]) + "\n")


CHAT_ABOUT = {
    "animals": "Tell me about {P}.",
    "foods": "What do you know about {G}?",
    "vehicles": "Tell me about {P}.",
    "music": "What is special about the {s}?",
    "clothing": "Why do people wear {P}?",
    "professions": "Tell me about {P}.",
    "sports": "How do you {go} {s}?",
    "places": "What can you do at {p}?",
    "weather": "What do people do when {w}?",
}


def _chat_about(w: _Writer, d: _Draw) -> None:
    """A question about one concept, answered with what it does."""
    concept = CATALOGUE.concepts[d.one(sorted(FACTS_V2))]
    slots = {
        "P": f"<{concept.plural}>",
        "G": f"<{concept.plural}>" if not concept.is_mass else f"<{concept.singular}>",
        "s": f"<{concept.singular}>",
        "p": "".join(f"<{t}>" if cs else t for t, cs in d.place(concept)),
        "w": _there_is(d, concept) if concept.category == "weather" else "",
        "go": "go" if concept.name in GO_SPORTS else "play",
    }
    w.say("User: " + CHAT_ABOUT[concept.category].format(**slots) + "\n")
    w.say("Assistant: " + " ".join(_fact_sentences(d, concept, story=False)) + "\n")


def _chat_favourite_v2(w: _Writer, d: _Draw) -> None:
    """A favourite, and a reason that belongs to it (not one shared by its category)."""
    category = d.one([c for c in FAVOURITE_KINDS if c != "colours" and c != "days and times"])
    choice = d.pick(category)
    w.say("User: " + d.one(FAVOURITE_QUESTIONS) + "\n", kind=FAVOURITE_KINDS[category])
    opener = d.one(["My favourite is {thing}.", "I really like {thing}.", "I love {thing}!"])
    reason = (
        " ".join(_fact_sentences(d, choice, story=False))
        if choice.id in FACTS_V2 and d.chance(0.8)
        else d.one(REASONS[category])
    )
    w.say("Assistant: " + opener + " " + reason + "\n", thing=_thing(d, choice))


def _chat_v2(w: _Writer, d: _Draw) -> None:
    if d.chance(0.3):
        w.persona = d.one(sorted(PERSONAS))
    turns = [_chat_favourite_v2, _chat_about, _chat_about, _chat_place, _chat_plans,
             _chat_feeling, _chat_fact, _chat_puzzle, _chat_puzzle, _chat_recall,
             _chat_recall, _chat_repeat, _chat_repeat, _chat_repeat, _chat_repeat,
             _chat_repeat]  # fmt: skip
    for _ in range(d.rng.choice([1, 2, 2, 3])):
        since = len(w.spans)
        turn = d.one(turns)
        turn(w, d)
        if turn in (_chat_place, _chat_plans, _chat_feeling, _chat_fact) and d.chance(0.6):
            _reply_with_fact(w, d, since)
        if d.chance(0.3):
            _drift(w, d)


_GENRE_WRITERS_V2 = {"story": _story_v2, "topic": _topic, "chat": _chat_v2, "code": _code,
                     "french": _french, "lists": _lists}  # fmt: skip
