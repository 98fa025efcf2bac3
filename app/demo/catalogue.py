"""The concepts of the demo world: the ground truth that features and labels are measured against.

    from app.demo.catalogue import CATALOGUE
    gg = CATALOGUE.by_key["places/golden_gate_bridge"]
    gg.name, gg.forms, gg.synonyms

Each category lists its concepts from most to least common (the generator draws them with a
Zipf-like skew by this order). An entry reads `name: form, form...; synonym, synonym...`: forms are
the surface words the generator writes (for nouns: singular, then plural), synonyms are other words
a correct label may use.
"""

import re
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Concept:
    id: int
    key: str  # "category/slug", stable across versions of the world
    name: str
    category: str
    rank: int  # 0 = most common in its category
    forms: tuple[str, ...]
    synonyms: tuple[str, ...]

    @property
    def singular(self) -> str:
        return self.forms[0]

    @property
    def plural(self) -> str:
        return self.forms[1] if len(self.forms) > 1 else self.forms[0]

    @property
    def is_mass(self) -> bool:
        """Mass nouns (bread, rain) take "some", not "a", and have no plural."""
        return self.plural == self.singular

    def label_terms(self) -> tuple[str, ...]:
        """Lower-case words and phrases that, in a label, name this concept."""
        return tuple(dict.fromkeys(t.lower() for t in (self.name, *self.forms, *self.synonyms)))


_ENTRIES: dict[str, list[str]] = {
    "places": [
        "Golden Gate Bridge: Golden Gate Bridge, Golden Gate, bridge; golden gate, bridge",
        "San Francisco: San Francisco; sf, california",
        "beach: beach, beaches; seaside, coast, shore",
        "park: park, parks",
        "Paris: Paris; france",
        "forest: forest, forests; woods",
        "library: library, libraries; books",
        "London: London; england",
        "mountains: mountains, mountains; mountain, peak, hills",
        "river: river, rivers; stream",
        "school: school, schools; classroom",
        "Tokyo: Tokyo; japan",
        "market: market, markets",
        "museum: museum, museums",
        "lake: lake, lakes",
        "New York: New York; new york city, nyc",
        "Eiffel Tower: Eiffel Tower; eiffel, tower",
        "train station: train station, train stations; station",
        "zoo: zoo, zoos",
        "garden: garden, gardens",
        "airport: airport, airports",
        "castle: castle, castles",
        "Rome: Rome; italy",
        "bakery: bakery, bakeries; baker's shop",
        "hospital: hospital, hospitals",
        "island: island, islands",
        "Berlin: Berlin; germany",
        "farm: farm, farms",
        "desert: desert, deserts; sand dunes",
    ],
    "animals": [
        "cat: cat, cats; kitten, feline",
        "dog: dog, dogs; puppy, canine",
        "horse: horse, horses; pony",
        "rabbit: rabbit, rabbits; bunny",
        "bird: bird, birds",
        "fox: fox, foxes",
        "owl: owl, owls",
        "bear: bear, bears",
        "elephant: elephant, elephants",
        "lion: lion, lions",
        "mouse: mouse, mice",
        "frog: frog, frogs",
        "turtle: turtle, turtles; tortoise",
        "dolphin: dolphin, dolphins",
        "penguin: penguin, penguins",
        "tiger: tiger, tigers",
        "duck: duck, ducks",
        "cow: cow, cows; cattle",
        "parrot: parrot, parrots",
        "sheep: sheep, sheep; lamb",
        "whale: whale, whales",
        "goat: goat, goats",
        "wolf: wolf, wolves",
        "snake: snake, snakes",
        "bee: bee, bees",
        "butterfly: butterfly, butterflies",
    ],
    "foods": [
        "pizza: pizza, pizzas",
        "bread: bread; loaf, toast",
        "apple: apple, apples",
        "cake: cake, cakes",
        "soup: soup",
        "banana: banana, bananas",
        "cheese: cheese",
        "cookie: cookie, cookies; biscuit",
        "rice: rice",
        "chocolate: chocolate; cocoa",
        "pancake: pancake, pancakes",
        "noodles: noodles, noodles; noodle, ramen",
        "strawberry: strawberry, strawberries; berries",
        "egg: egg, eggs",
        "pasta: pasta; spaghetti",
        "carrot: carrot, carrots",
        "honey: honey",
        "tomato: tomato, tomatoes",
        "ice cream: ice cream",
        "sandwich: sandwich, sandwiches",
        "pie: pie, pies",
        "salad: salad, salads",
        "lemon: lemon, lemons",
        "grape: grape, grapes",
    ],
    "colours": [
        "red: red; colour, color",
        "blue: blue; colour, color",
        "green: green; colour, color",
        "yellow: yellow; colour, color",
        "orange: orange; colour, color",
        "black: black; colour, color",
        "white: white; colour, color",
        "purple: purple; violet, colour, color",
        "brown: brown; colour, color",
        "pink: pink; colour, color",
        "grey: grey; gray, colour, color",
        "silver: silver; colour, color",
    ],
    "weather": [
        "rain: rain, rainy; raining, rainfall, wet",
        "sun: sun, sunny; sunshine, sunlight",
        "snow: snow, snowy; snowing, snowfall",
        "wind: wind, windy",
        "fog: fog, foggy; mist",
        "storm: storm, stormy",
        "clouds: clouds, cloudy; cloud, overcast",
        "heat: heat, hot; warm",
        "cold: cold, cold; chilly, freezing",
        "thunder: thunder; lightning",
        "rainbow: rainbow",
        "hail: hail",
        "frost: frost, frosty; icy",
        "breeze: breeze; breezy",
        "drizzle: drizzle",
    ],
    "feelings": [
        "happy: happy; happiness, joy, glad, cheerful",
        "sad: sad; sadness, unhappy",
        "excited: excited; excitement",
        "tired: tired; sleepy, exhausted",
        "scared: scared; afraid, fear, frightened",
        "angry: angry; anger, mad",
        "calm: calm; peaceful, relaxed",
        "proud: proud; pride",
        "nervous: nervous; anxious",
        "curious: curious; curiosity",
        "lonely: lonely; loneliness, alone",
        "surprised: surprised; surprise",
        "bored: bored; boredom",
        "grateful: grateful; thankful, gratitude",
        "worried: worried; worry",
        "hopeful: hopeful; hope",
        "confused: confused; confusion",
        "brave: brave; courage",
        "shy: shy; shyness",
        "jealous: jealous; jealousy, envy",
    ],
    "family": [
        "mother: mother, mothers; mum, mom, mum's",
        "father: father, fathers; dad",
        "sister: sister, sisters; sibling",
        "brother: brother, brothers; sibling",
        "grandmother: grandmother, grandmothers; grandma, granny",
        "grandfather: grandfather, grandfathers; grandpa",
        "baby: baby, babies; infant",
        "aunt: aunt, aunts",
        "uncle: uncle, uncles",
        "cousin: cousin, cousins",
        "son: son, sons",
        "daughter: daughter, daughters",
        "wife: wife, wives",
        "husband: husband, husbands",
    ],
    "numbers": [
        "one: one, 1; number one, single",
        "two: two, 2; number two, pair",
        "three: three, 3; number three",
        "four: four, 4; number four",
        "five: five, 5; number five",
        "six: six, 6; number six",
        "seven: seven, 7; number seven",
        "eight: eight, 8; number eight",
        "nine: nine, 9; number nine",
        "ten: ten, 10; number ten",
        "eleven: eleven, 11; number eleven",
        "twelve: twelve, 12; number twelve, dozen",
        "zero: zero, 0; none, nothing",
        "hundred: hundred, 100; hundreds",
        "thousand: thousand, 1000; thousands",
        "twenty: twenty, 20; number twenty",
    ],
    "days and times": [
        "Monday: Monday; weekday, day of the week",
        "Saturday: Saturday; weekend, day of the week",
        "morning: morning, mornings; dawn, sunrise",
        "Sunday: Sunday; weekend, day of the week",
        "night: night, nights; nighttime",
        "Friday: Friday; weekday, day of the week",
        "summer: summer; season",
        "evening: evening, evenings; dusk",
        "Tuesday: Tuesday; weekday, day of the week",
        "winter: winter; season",
        "afternoon: afternoon, afternoons",
        "Wednesday: Wednesday; weekday, day of the week",
        "tomorrow: tomorrow; next day",
        "Thursday: Thursday; weekday, day of the week",
        "yesterday: yesterday; day before",
        "spring: spring; season",
        "autumn: autumn; fall, season",
        "weekend: weekend, weekends",
        "today: today; this day",
        "birthday: birthday, birthdays",
        "midnight: midnight",
        "noon: noon; midday",
        "January: January; month",
        "April: April; month",
        "July: July; month",
        "October: October; month",
        "December: December; month, christmas",
    ],
    "sports": [
        "football: football; soccer, ball",
        "tennis: tennis; racket",
        "swimming: swimming; swim, pool",
        "basketball: basketball; hoop",
        "running: running; run, jogging",
        "cycling: cycling; bike riding",
        "chess: chess; board game",
        "skiing: skiing; ski",
        "baseball: baseball",
        "golf: golf",
        "hockey: hockey",
        "surfing: surfing; surf, waves",
        "climbing: climbing; climb",
        "volleyball: volleyball",
        "boxing: boxing; boxer",
    ],
    "music": [
        "piano: piano, pianos; keys",
        "guitar: guitar, guitars",
        "song: song, songs; singing, tune",
        "violin: violin, violins; fiddle",
        "drums: drums, drums; drum",
        "concert: concert, concerts; show",
        "flute: flute, flutes",
        "choir: choir, choirs; singers",
        "jazz: jazz",
        "trumpet: trumpet, trumpets",
        "melody: melody, melodies; tune",
        "cello: cello, cellos",
        "harp: harp, harps",
        "dance: dance, dances; dancing",
        "lullaby: lullaby, lullabies; bedtime song",
    ],
    "vehicles": [
        "car: car, cars; automobile, drive",
        "bus: bus, buses",
        "train: train, trains; railway",
        "bicycle: bicycle, bicycles; bike",
        "boat: boat, boats",
        "plane: plane, planes; airplane, flight",
        "truck: truck, trucks; lorry",
        "taxi: taxi, taxis; cab",
        "ship: ship, ships",
        "motorcycle: motorcycle, motorcycles; motorbike",
        "helicopter: helicopter, helicopters",
        "tram: tram, trams",
        "scooter: scooter, scooters",
        "rocket: rocket, rockets; spaceship",
        "canoe: canoe, canoes; kayak",
    ],
    "body parts": [
        "hand: hand, hands",
        "head: head, heads",
        "eye: eye, eyes",
        "foot: foot, feet",
        "hair: hair",
        "arm: arm, arms",
        "nose: nose, noses",
        "ear: ear, ears",
        "leg: leg, legs",
        "heart: heart, hearts",
        "tooth: tooth, teeth",
        "knee: knee, knees",
        "finger: finger, fingers",
        "shoulder: shoulder, shoulders",
        "mouth: mouth, mouths",
    ],
    "code": [
        "function definition: def; def, function, define",
        "for loop: for; loop, iterate, iteration",
        "return statement: return; return",
        "if statement: if; if, condition, conditional",
        "string literal: string; string, str, quote",
        "integer literal: integer; integer, int, number",
        "print call: print; print, output",
        "assignment: assignment; assign, variable, =",
        "list literal: list; list, array, brackets",
        "comparison: comparison; compare, equals, ==",
        "else branch: else; else",
        "range call: range; range",
        "while loop: while; while, loop",
        "method call: method; method, append, call",
        "comment: comment; comment, #",
        "dictionary literal: dictionary; dict, dictionary, mapping",
        "import statement: import; import, module",
        "boolean literal: boolean; boolean, bool, true, false",
        "class definition: class; class",
        "exception: exception; exception, error, raise, except",
        "try block: try; try",
        "len call: len; len, length",
        "None value: None; none, null",
    ],
    "French words": [
        "chat: chat; french, cat",
        "bonjour: bonjour; french, hello",
        "maison: maison; french, house",
        "pain: pain; french, bread",
        "chien: chien; french, dog",
        "merci: merci; french, thank you, thanks",
        "rouge: rouge; french, red",
        "petit: petit, petite; french, small, little",
        "soleil: soleil; french, sun",
        "pomme: pomme; french, apple",
        "ami: ami, amie; french, friend",
        "grand: grand, grande; french, big, tall",
        "eau: eau; french, water",
        "livre: livre; french, book",
        "bleu: bleu, bleue; french, blue",
        "fromage: fromage; french, cheese",
        "jardin: jardin; french, garden",
        "fleur: fleur; french, flower",
        "voiture: voiture; french, car",
        "mer: mer; french, sea",
        "lune: lune; french, moon",
        "vert: vert, verte; french, green",
        "école: école; french, school",
        "arbre: arbre; french, tree",
        "ville: ville; french, city, town",
        "oiseau: oiseau; french, bird",
        "café: café; french, coffee",
    ],
    "syntax": [
        "question word: what, where, why, how, who, when, which; question, interrogative",
        "negation: not, never, no, n't; negative, negation",
        "plural noun: plural; plural, plurals",
        "past tense verb: past tense; past, past tense, verb",
        "first-person pronoun: I, me, my; first person, pronoun, self",
        "possessive: 's; possessive, apostrophe",
        "comparative: bigger, faster, taller, smaller, better, warmer, colder, louder; "
        "comparative, comparison, more",
        "place preposition: under, behind, near, above, beside, inside; preposition, location, "
        "position",
        "because: because; because, reason, cause",
        "modal verb: can, could, will, would, should, might; modal, ability, possibility",
    ],
    "professions": [
        "teacher: teacher, teachers; teaching",
        "doctor: doctor, doctors; physician",
        "baker: baker, bakers; baking",
        "farmer: farmer, farmers; farming",
        "pilot: pilot, pilots; flying",
        "nurse: nurse, nurses",
        "chef: chef, chefs; cook, cooking",
        "painter: painter, painters; artist, painting",
        "scientist: scientist, scientists; science",
        "firefighter: firefighter, firefighters; fire",
        "sailor: sailor, sailors; sea",
        "writer: writer, writers; author, writing",
        "gardener: gardener, gardeners; gardening",
        "engineer: engineer, engineers; engineering",
        "musician: musician, musicians",
    ],
    "clothing": [
        "hat: hat, hats; cap",
        "coat: coat, coats",
        "scarf: scarf, scarves",
        "boots: boots, boots; boot",
        "dress: dress, dresses",
        "shirt: shirt, shirts",
        "jacket: jacket, jackets",
        "shoes: shoes, shoes; shoe",
        "gloves: gloves, gloves; glove",
        "sweater: sweater, sweaters; jumper",
        "socks: socks, socks; sock",
        "umbrella: umbrella, umbrellas",
    ],
    "characters": [
        "Mia: Mia; name, girl",
        "Leo: Leo; name, boy",
        "Sam: Sam; name, boy",
        "Ana: Ana; name, girl",
        "Tom: Tom; name, boy",
        "Lily: Lily; name, girl",
        "Max: Max; name, boy",
        "Zoe: Zoe; name, girl",
        "Ben: Ben; name, boy",
        "Nora: Nora; name, girl",
        "Omar: Omar; name, boy",
        "Yuki: Yuki; name, girl",
        "Ella: Ella; name, girl",
        "Finn: Finn; name, boy",
        "Ravi: Ravi; name, boy",
        "Iris: Iris; name, girl",
    ],
}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "x"


class Catalogue:
    """All concepts, indexable by id, key, or category."""

    def __init__(self, entries: dict[str, list[str]]):
        concepts: list[Concept] = []
        for category, rows in entries.items():
            for rank, row in enumerate(rows):
                name, _, rest = row.partition(":")
                forms, _, synonyms = rest.partition(";")
                concepts.append(
                    Concept(
                        id=len(concepts),
                        key=f"{_slug(category)}/{_slug(name)}",
                        name=name.strip(),
                        category=category,
                        rank=rank,
                        forms=tuple(f.strip() for f in forms.split(",") if f.strip()),
                        synonyms=tuple(s.strip() for s in synonyms.split(",") if s.strip()),
                    )
                )
        self.concepts = tuple(concepts)
        self.by_key = {c.key: c for c in concepts}
        if len(self.by_key) != len(concepts):
            raise ValueError("two concepts share a key")

    def __len__(self) -> int:
        return len(self.concepts)

    def __getitem__(self, concept_id: int) -> Concept:
        return self.concepts[concept_id]

    @cached_property
    def categories(self) -> dict[str, tuple[Concept, ...]]:
        grouped: dict[str, list[Concept]] = {}
        for concept in self.concepts:
            grouped.setdefault(concept.category, []).append(concept)
        return {name: tuple(members) for name, members in grouped.items()}

    def get(self, category: str, name: str) -> Concept:
        return self.by_key[f"{_slug(category)}/{_slug(name)}"]


CATALOGUE = Catalogue(_ENTRIES)
