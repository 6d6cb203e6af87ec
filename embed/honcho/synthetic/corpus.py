"""A seeded synthetic Polish/English agent-memory corpus shaped like a Honcho v3 database.

Why synthetic: migration tooling must be exercised, and embedding models compared, on data that
looks like Honcho's (third-person "conclusions" about peers, chunked chat messages, soft deletes,
awkward edge texts) without shipping anyone's real memories. Every fact about a peer is rendered
from templates in Polish and/or English; a share of facts exists in both languages, so labelled
queries in either language have relevant documents in the same or the other language.

Everything derives from `random.Random` streams keyed by the seed: the same seed gives equal rows,
in the same order, on every run and platform. Pure Python, no database.
"""

from __future__ import annotations

import base64
import itertools
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

Row = dict[str, Any]

# (documents, message_embeddings rows). "honcho" matches the row counts of a real deployment.
SCALES: dict[str, tuple[int, int]] = {"tiny": (200, 100), "small": (2000, 1000), "honcho": (26141, 13558)}

NANOID_SIZE = 21
# Messages longer than this are split into several message_embeddings rows, as Honcho does
# when a message exceeds the embedding model's input limit.
CHUNK_CHARS = 2000
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_DAYS = 540
# Rows written before this by "older Honcho" repeat the full message text in every chunk row.
OLD_STYLE_BEFORE = datetime(2024, 10, 1, tzinfo=UTC)
DELETED_SHARE = 0.03
CROSS_LINGUAL_SHARE = 0.4
LEVELS = ("explicit", "deductive", "inductive", "contradiction")
_LEVEL_CUM = (0.80, 0.92, 0.98, 1.0)

# --------------------------------------------------------------------------- vocabulary
# Names: (nominative, genitive, gender). Polish templates only put names in these two cases.
NAMES_PL = (
    ("Anna", "Anny", "f"), ("Marek", "Marka", "m"), ("Katarzyna", "Katarzyny", "f"),
    ("Tomasz", "Tomasza", "m"), ("Zofia", "Zofii", "f"), ("Piotr", "Piotra", "m"),
    ("Magdalena", "Magdaleny", "f"), ("Łukasz", "Łukasza", "m"), ("Agnieszka", "Agnieszki", "f"),
    ("Paweł", "Pawła", "m"), ("Małgorzata", "Małgorzaty", "f"), ("Jakub", "Jakuba", "m"),
    ("Ewa", "Ewy", "f"), ("Michał", "Michała", "m"), ("Joanna", "Joanny", "f"),
    ("Krzysztof", "Krzysztofa", "m"), ("Grażyna", "Grażyny", "f"), ("Wojciech", "Wojciecha", "m"),
    ("Jadwiga", "Jadwigi", "f"), ("Bartłomiej", "Bartłomieja", "m"), ("Żaneta", "Żanety", "f"),
    ("Zdzisław", "Zdzisława", "m"),
)
NAMES_EN = (
    ("John", "Johna", "m"), ("Emily", "Emily", "f"), ("Sarah", "Sarah", "f"), ("David", "Davida", "m"),
    ("Olivia", "Olivii", "f"), ("James", "Jamesa", "m"), ("Hannah", "Hanny", "f"), ("Oliver", "Olivera", "m"),
)
# (en, pl nominative, pl locative with its preposition, pl genitive)
CITIES = (
    ("Warsaw", "Warszawa", "w Warszawie", "Warszawy"), ("Krakow", "Kraków", "w Krakowie", "Krakowa"),
    ("Gdansk", "Gdańsk", "w Gdańsku", "Gdańska"), ("Wroclaw", "Wrocław", "we Wrocławiu", "Wrocławia"),
    ("Poznan", "Poznań", "w Poznaniu", "Poznania"), ("Lodz", "Łódź", "w Łodzi", "Łodzi"),
    ("Szczecin", "Szczecin", "w Szczecinie", "Szczecina"), ("Lublin", "Lublin", "w Lublinie", "Lublina"),
    ("Katowice", "Katowice", "w Katowicach", "Katowic"), ("Bialystok", "Białystok", "w Białymstoku", "Białegostoku"),
    ("Torun", "Toruń", "w Toruniu", "Torunia"), ("Rzeszow", "Rzeszów", "w Rzeszowie", "Rzeszowa"),
    ("London", "Londyn", "w Londynie", "Londynu"), ("Berlin", "Berlin", "w Berlinie", "Berlina"),
    ("Dublin", "Dublin", "w Dublinie", "Dublina"), ("Manchester", "Manchester", "w Manchesterze", "Manchesteru"),
    ("Amsterdam", "Amsterdam", "w Amsterdamie", "Amsterdamu"), ("Oslo", "Oslo", "w Oslo", "Oslo"),
    ("Vienna", "Wiedeń", "w Wiedniu", "Wiednia"), ("Prague", "Praga", "w Pradze", "Pragi"),
)
PLACES = (
    *CITIES,
    ("Lisbon", "Lizbona", "w Lizbonie", "Lizbony"), ("Rome", "Rzym", "w Rzymie", "Rzymu"),
    ("Barcelona", "Barcelona", "w Barcelonie", "Barcelony"), ("Japan", "Japonia", "w Japonii", "Japonii"),
    ("Zakopane", "Zakopane", "w Zakopanem", "Zakopanego"), ("Sopot", "Sopot", "w Sopocie", "Sopotu"),
    ("Paris", "Paryż", "w Paryżu", "Paryża"), ("Athens", "Ateny", "w Atenach", "Aten"),
    ("Budapest", "Budapeszt", "w Budapeszcie", "Budapesztu"), ("Vilnius", "Wilno", "w Wilnie", "Wilna"),
    ("Split", "Split", "w Splicie", "Splitu"), ("Norway", "Norwegia", "w Norwegii", "Norwegii"),
    ("Portugal", "Portugalia", "w Portugalii", "Portugalii"), ("Georgia", "Gruzja", "w Gruzji", "Gruzji"),
)
# (en, pl genitive, pl locative with preposition)
MONTHS = (
    ("January", "stycznia", "w styczniu"), ("February", "lutego", "w lutym"), ("March", "marca", "w marcu"),
    ("April", "kwietnia", "w kwietniu"), ("May", "maja", "w maju"), ("June", "czerwca", "w czerwcu"),
    ("July", "lipca", "w lipcu"), ("August", "sierpnia", "w sierpniu"), ("September", "września", "we wrześniu"),
    ("October", "października", "w październiku"), ("November", "listopada", "w listopadzie"),
    ("December", "grudnia", "w grudniu"),
)
# (en, pl "go" adverbial, pl "stay" adverbial)
PURPOSES = (
    ("for a conference", "na konferencję", "na konferencji"),
    ("for a friend's wedding", "na wesele przyjaciółki", "na weselu przyjaciółki"),
    ("for a short holiday", "na krótki urlop", "na krótkim urlopie"),
    ("for a job interview", "na rozmowę kwalifikacyjną", "na rozmowie kwalifikacyjnej"),
    ("for a music festival", "na festiwal muzyczny", "na festiwalu muzycznym"),
    ("to see family", "w odwiedziny do rodziny", "u rodziny"),
)
# (en with article, pl masculine, pl feminine)
JOBS = (
    ("a nurse", "pielęgniarz", "pielęgniarka"), ("a software developer", "programista", "programistka"),
    ("a teacher", "nauczyciel", "nauczycielka"), ("an accountant", "księgowy", "księgowa"),
    ("a pharmacist", "farmaceuta", "farmaceutka"), ("an architect", "architekt", "architektka"),
    ("a truck driver", "kierowca ciężarówki", "kierowczyni ciężarówki"), ("a graphic designer", "grafik", "graficzka"),
    ("a chef", "kucharz", "kucharka"), ("a physiotherapist", "fizjoterapeuta", "fizjoterapeutka"),
    ("a lawyer", "prawnik", "prawniczka"), ("a data analyst", "analityk danych", "analityczka danych"),
)
WORKPLACES = (
    ("at a hospital", "w szpitalu"), ("at a small startup", "w małym startupie"),
    ("at a primary school", "w szkole podstawowej"), ("at a logistics company", "w firmie logistycznej"),
    ("at a bank", "w banku"), ("remotely from home", "zdalnie z domu"), ("at a university", "na uniwersytecie"),
    ("at the city hall", "w urzędzie miasta"), ("at a family bakery", "w rodzinnej piekarni"),
)
ALLERGENS = (
    ("peanuts", "orzeszki ziemne"), ("cat hair", "sierść kota"), ("pollen", "pyłki"), ("penicillin", "penicylinę"),
    ("shellfish", "owoce morza"), ("bee stings", "użądlenia pszczół"), ("gluten", "gluten"),
    ("dust mites", "roztocza"), ("strawberries", "truskawki"), ("latex", "lateks"),
)
# (en, pl accusative, pl genitive)
DRINKS = (
    ("green tea", "zieloną herbatę", "zielonej herbaty"), ("black coffee", "czarną kawę", "czarnej kawy"),
    ("espresso", "espresso", "espresso"), ("sparkling water", "wodę gazowaną", "wody gazowanej"),
    ("kombucha", "kombuchę", "kombuchy"), ("hot chocolate", "gorącą czekoladę", "gorącej czekolady"),
    ("lemonade", "lemoniadę", "lemoniady"), ("yerba mate", "yerba mate", "yerba mate"),
    ("craft beer", "piwo kraftowe", "piwa kraftowego"), ("red wine", "czerwone wino", "czerwonego wina"),
    ("kefir", "kefir", "kefiru"), ("oat-milk latte", "latte na mleku owsianym", "latte na mleku owsianym"),
)
# (en 3rd person, en 1st person, en -ing, pl 3rd person, pl 1st person)
HOBBIES = (
    ("plays chess", "play chess", "playing chess", "gra w szachy", "gram w szachy"),
    ("goes hiking in the mountains", "go hiking in the mountains", "hiking in the mountains",
     "chodzi po górach", "chodzę po górach"),
    ("rides a road bike", "ride my road bike", "cycling", "jeździ na rowerze szosowym", "jeżdżę na rowerze szosowym"),
    ("paints watercolours", "paint watercolours", "painting watercolours", "maluje akwarele", "maluję akwarele"),
    ("bakes sourdough bread", "bake sourdough bread", "baking sourdough bread",
     "piecze chleb na zakwasie", "piekę chleb na zakwasie"),
    ("goes fishing on the lake", "go fishing on the lake", "fishing on the lake",
     "łowi ryby na jeziorze", "łowię ryby na jeziorze"),
    ("plays board games with friends", "play board games with friends", "playing board games with friends",
     "gra z przyjaciółmi w planszówki", "gram z przyjaciółmi w planszówki"),
    ("goes bouldering", "go bouldering", "bouldering at the climbing gym",
     "chodzi na ściankę wspinaczkową", "chodzę na ściankę wspinaczkową"),
    ("works in the allotment garden", "work in my allotment garden", "working in the allotment garden",
     "pracuje na działce", "pracuję na działce"),
    ("restores old furniture", "restore old furniture", "restoring old furniture",
     "odnawia stare meble", "odnawiam stare meble"),
    ("goes to the cinema", "go to the cinema", "watching films at the cinema", "chodzi do kina", "chodzę do kina"),
    ("plays guitar in a garage band", "play guitar in a garage band", "rehearsing with a garage band",
     "gra na gitarze w garażowym zespole", "gram na gitarze w garażowym zespole"),
)
# (en 3rd, en 1st, pl 3rd m, pl 3rd f, pl 1st m, pl 1st f, avoid en, avoid pl genitive)
DIETS = (
    ("is a vegetarian", "am a vegetarian", "jest wegetarianinem", "jest wegetarianką",
     "Jestem wegetarianinem", "Jestem wegetarianką", "meat", "mięsa"),
    ("is vegan", "am vegan", "jest weganinem", "jest weganką", "Jestem weganinem", "Jestem weganką",
     "any animal products", "produktów odzwierzęcych"),
    ("is a pescatarian", "am a pescatarian", "jest peskatarianinem", "jest peskatarianką",
     "Jestem peskatarianinem", "Jestem peskatarianką", "red meat or poultry", "czerwonego mięsa i drobiu"),
    ("follows a keto diet", "follow a keto diet", "stosuje dietę keto", "stosuje dietę keto",
     "Stosuję dietę keto", "Stosuję dietę keto", "bread or sugar", "pieczywa i cukru"),
    ("is on a low-FODMAP diet", "am on a low-FODMAP diet", "jest na diecie low-FODMAP", "jest na diecie low-FODMAP",
     "Jestem na diecie low-FODMAP", "Jestem na diecie low-FODMAP", "onions or garlic", "cebuli i czosnku"),
    ("eats only halal food", "eat only halal food", "je wyłącznie jedzenie halal", "je wyłącznie jedzenie halal",
     "Jem wyłącznie jedzenie halal", "Jem wyłącznie jedzenie halal", "pork", "wieprzowiny"),
    ("is on a gluten-free diet", "am on a gluten-free diet", "jest na diecie bezglutenowej",
     "jest na diecie bezglutenowej", "Jestem na diecie bezglutenowej", "Jestem na diecie bezglutenowej",
     "wheat or rye", "pszenicy i żyta"),
)
# (en 3rd, en 1st, pl "na ..." destination)
ACTIVITIES = (
    ("goes to the gym", "go to the gym", "na siłownię"), ("goes swimming", "go swimming", "na basen"),
    ("attends a yoga class", "attend a yoga class", "na jogę"),
    ("has choir rehearsal", "have choir rehearsal", "na próby chóru"),
    ("sees a therapist", "see a therapist", "na terapię"),
    ("takes Spanish lessons", "take Spanish lessons", "na lekcje hiszpańskiego"),
    ("goes to dance class", "go to dance class", "na zajęcia z tańca"),
    ("volunteers at the animal shelter", "volunteer at the animal shelter", "na wolontariat do schroniska"),
)
WEEKDAYS = (
    ("Mondays", "Monday", "w poniedziałki"), ("Tuesdays", "Tuesday", "we wtorki"),
    ("Wednesdays", "Wednesday", "w środy"), ("Thursdays", "Thursday", "w czwartki"),
    ("Fridays", "Friday", "w piątki"), ("Saturdays", "Saturday", "w soboty"), ("Sundays", "Sunday", "w niedziele"),
)
# (en, pl nominative, pl accusative, relative pronoun, possessive "my", gender)
RELATIVES = (
    ("sister", "siostra", "siostrę", "która", "Moja", "f"), ("brother", "brat", "brata", "który", "Mój", "m"),
    ("daughter", "córka", "córkę", "która", "Moja", "f"), ("son", "syn", "syna", "który", "Mój", "m"),
    ("grandmother", "babcia", "babcię", "która", "Moja", "f"),
    ("grandfather", "dziadek", "dziadka", "który", "Mój", "m"),
)
# (en, pl question opener, pl instrumental phrase, pl "za swoją ..." phrase, pl "my ..." phrase)
MEDIA = (
    ("book", "Jaka jest ulubiona książka", "Ulubioną książką", "swoją ulubioną książkę", "Moja ulubiona książka"),
    ("film", "Jaki jest ulubiony film", "Ulubionym filmem", "swój ulubiony film", "Mój ulubiony film"),
    ("band", "Jaki jest ulubiony zespół", "Ulubionym zespołem", "swój ulubiony zespół", "Mój ulubiony zespół"),
    ("game", "Jaka jest ulubiona gra", "Ulubioną grą", "swoją ulubioną grę", "Moja ulubiona gra"),
)
TITLES = {
    "book": (
        ('"The Doll" by Bolesław Prus', "„Lalka” Bolesława Prusa"),
        ('"Solaris" by Stanisław Lem', "„Solaris” Stanisława Lema"),
        ('"Dune" by Frank Herbert', "„Diuna” Franka Herberta"),
        ('"Flights" by Olga Tokarczuk', "„Bieguni” Olgi Tokarczuk"),
        ('"The Last Wish" by Andrzej Sapkowski', "„Ostatnie życzenie” Andrzeja Sapkowskiego"),
        ('"Pride and Prejudice" by Jane Austen', "„Duma i uprzedzenie” Jane Austen"),
        ('"The Master and Margarita" by Mikhail Bulgakov', "„Mistrz i Małgorzata” Michaiła Bułhakowa"),
    ),
    "film": (
        ('"Cold War"', "„Zimna wojna”"), ('"The Pianist"', "„Pianista”"), ('"Ida"', "„Ida”"),
        ('"Amélie"', "„Amelia”"), ('"Interstellar"', "„Interstellar”"), ('"Sexmission"', "„Seksmisja”"),
        ('"Spirited Away"', "„Spirited Away: W krainie bogów”"),
    ),
    "band": (
        ("Kult", "Kult"), ("Radiohead", "Radiohead"), ("Myslovitz", "Myslovitz"), ("Daft Punk", "Daft Punk"),
        ("Dawid Podsiadło", "Dawid Podsiadło"), ("Fleetwood Mac", "Fleetwood Mac"),
    ),
    "game": (
        ("The Witcher 3", "„Wiedźmin 3”"), ("Civilization VI", "„Civilization VI”"), ("Catan", "„Catan”"),
        ("Ticket to Ride", "„Wsiąść do pociągu”"), ("Frostpunk", "„Frostpunk”"),
    ),
}
BODY_PARTS = (
    ("arm", "rękę"), ("leg", "nogę"), ("wrist", "nadgarstek"), ("ankle", "kostkę"),
    ("collarbone", "obojczyk"), ("finger", "palec"), ("nose", "nos"),
)
INJURY_ACTIVITIES = (
    ("skiing", "jazdy na nartach"), ("rock climbing", "wspinaczki"), ("playing football", "gry w piłkę nożną"),
    ("cycling", "jazdy na rowerze"), ("ice skating", "jazdy na łyżwach"), ("moving furniture", "przenoszenia mebli"),
)
GOALS = (
    ("run a marathon", "przebiec maraton"), ("buy a flat", "kupić mieszkanie"),
    ("learn to swim", "nauczyć się pływać"), ("get a driving licence", "zdobyć prawo jazdy"),
    ("write a novel", "napisać powieść"), ("visit Japan", "odwiedzić Japonię"),
    ("pay off the mortgage", "spłacić kredyt hipoteczny"), ("finish a master's degree", "skończyć studia magisterskie"),
    ("open a bakery", "otworzyć piekarnię"),
)
SKILLS = (
    ("Spanish", "hiszpańskiego"), ("German", "niemieckiego"), ("Japanese", "japońskiego"),
    ("Italian", "włoskiego"), ("Norwegian", "norweskiego"), ("the piano", "gry na pianinie"),
    ("the guitar", "gry na gitarze"), ("Python programming", "programowania w Pythonie"),
    ("Polish sign language", "polskiego języka migowego"),
)
# (en, pl nominative, accusative, instrumental, relative pronoun, possessive "my")
SPECIES = (
    ("dog", "pies", "psa", "psem", "który", "Mój"), ("cat", "kot", "kota", "kotem", "który", "Mój"),
    ("parrot", "papuga", "papugę", "papugą", "która", "Moja"),
    ("rabbit", "królik", "królika", "królikiem", "który", "Mój"),
    ("hamster", "chomik", "chomika", "chomikiem", "który", "Mój"),
    ("tortoise", "żółw", "żółwia", "żółwiem", "który", "Mój"), ("horse", "koń", "konia", "koniem", "który", "Mój"),
)
PET_NAMES = (
    "Burek", "Luna", "Filemon", "Mruczek", "Kleks", "Pepe", "Tosia", "Rex", "Bella", "Figa", "Czarek", "Miki",
    "Sushi", "Kropka", "Łatek", "Żabka",
)
DISLIKES = (
    ("loud music", "głośnej muzyki"), ("crowded trams", "zatłoczonych tramwajów"),
    ("early morning meetings", "porannych spotkań"), ("cold weather", "zimna"), ("spicy food", "ostrego jedzenia"),
    ("waiting in queues", "stania w kolejkach"), ("phone calls", "rozmów telefonicznych"),
    ("horror films", "horrorów"), ("small talk", "rozmów o niczym"),
)
ASSISTANT_LINES = {
    "en": (
        "Got it, I'll keep that in mind.", "Thanks for sharing! Is there anything else you'd like me to remember?",
        "Noted. Would you like a reminder about it later?", "That sounds great — how did it go?",
        "I'm sorry to hear that. How are you feeling now?", "Sure, here is a short summary of what we discussed.",
        "Understood. I'll take that into account next time.",
    ),
    "pl": (
        "Jasne, zapamiętam to.", "Dzięki, że się tym dzielisz! Czy mam zapamiętać coś jeszcze?",
        "Zanotowane. Przypomnieć Ci o tym później?", "Brzmi świetnie — jak poszło?",
        "Przykro mi to słyszeć. Jak się teraz czujesz?", "Oczywiście, oto krótkie podsumowanie naszej rozmowy.",
        "Rozumiem. Następnym razem wezmę to pod uwagę.",
    ),
}
NOTED = {"en": ("Noted:", "I'll remember that", "To confirm:", "Saving this:"),
         "pl": ("Zapisuję:", "Zapamiętam, że", "Potwierdzam:", "Notuję:")}
GREETINGS = {"en": ("", "", "Hi! ", "Hey, ", "So, "), "pl": ("", "", "Hej! ", "Cześć, ", "Słuchaj, ")}
SHORT_REPLIES = ("ok", "dzięki!", "thanks!", "👍", "tak", "yes", "OK", "super")

# Edge texts for documents (fixed content; not facts, never in qrels). No NUL characters.
EDGE_DOCUMENTS: tuple[tuple[str, str], ...] = (
    ("", "none"),
    ("  \n\t  ", "none"),
    ("Anna uwielbia górskie wędrówki 🏔️🥾 i zawsze zabiera termos z herbatą ☕.", "pl"),
    ("The user reacts with 😂 or 👍 instead of typing full answers.", "en"),
    ("🎉🎂🥳", "none"),
    ("Użytkownik mówi, że the deadline was moved to Friday, ale nadal się stresuje.", "mixed"),
    ("User said: „Jutro mam egzamin z matmy”, so they will be busy tomorrow.", "mixed"),
    ('Notatka: plik C:\\Users\\anna\\Dokumenty\\plan.txt, cytat "tak" i \'nie\'\tTAB\nnowa linia\r\nkoniec.', "pl"),
    (unicodedata.normalize("NFD", "Zażółć gęślą jaźń — użytkownik testuje polskie znaki (NFD)."), "pl"),
    ("<b>Ważne:</b> the user asked to *never* share their e-mail (anna@example.com).", "mixed"),
    ("SELECT * FROM users; -- the user pasted SQL and asked why it was slow", "en"),
    ("The user prefers short, concise answers.", "en"),
    ("The user prefers short, concise answers.", "en"),
    ("The user prefers short, concise answers.", "en"),
    ("Użytkownik woli krótkie, zwięzłe odpowiedzi.", "pl"),
    ("Użytkownik woli krótkie, zwięzłe odpowiedzi.", "pl"),
    ("Użytkownik woli krótkie, zwięzłe odpowiedzi.", "pl"),
)
EDGE_MESSAGES: tuple[str, ...] = (
    "",
    "   \n\t ",
    "👍",
    "Jutro mam meeting o 9, remind me proszę 🙏",
    unicodedata.normalize("NFD", "Zażółć gęślą jaźń"),
    'Ścieżka: C:\\temp\\notatki.txt\tz tabulatorem i "cudzysłowem"\nw dwóch liniach.',
)
LONG_MIN_CHARS = 8001


# --------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class FactType:
    """One kind of memory. `make` draws slot values (and a key that may occur once per peer),
    `doc` are third-person renderings, `ask` questions about it, `say` first-person chat lines."""

    name: str
    weight: float
    make: Callable[[random.Random, str], tuple[str, dict[str, Any]]]
    doc: dict[str, tuple[str, ...]]
    ask: dict[str, tuple[str, ...]]
    say: dict[str, tuple[str, ...]]


def _place(t: tuple[str, str, str, str]) -> dict[str, str]:
    return {"en": t[0], "nom": t[1], "loc": t[2], "gen": t[3]}


def _month(t: tuple[str, str, str]) -> dict[str, str]:
    return {"en": t[0], "gen": t[1], "loc": t[2], "Loc": t[2][0].upper() + t[2][1:]}


def _make_trip(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    d, p = rng.choice(PLACES), rng.choice(PURPOSES)
    slots = {"d": _place(d), "m": _month(rng.choice(MONTHS)), "y": rng.randint(2019, 2025),
             "p": {"en": p[0], "go": p[1], "stay": p[2]}}
    return d[0], slots


def _make_home(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    return "", {"c": _place(rng.choice(CITIES)), "k": rng.randint(2, 12)}


def _make_job(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    j, w = rng.choice(JOBS), rng.choice(WORKPLACES)
    return "", {"j": {"en": j[0], "pl": j[1] if g == "m" else j[2]}, "w": {"en": w[0], "pl": w[1]}}


def _make_allergy(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    a = rng.choice(ALLERGENS)
    return "", {"a": {"en": a[0], "pl": a[1]}}


def _make_drink(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    a, b = rng.sample(DRINKS, 2)
    return "", {"a": {"en": a[0], "acc": a[1]}, "b": {"en": b[0], "gen": b[2]}}


def _make_hobby(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    h = rng.choice(HOBBIES)
    return "", {"h": {"en3": h[0], "en1": h[1], "ing": h[2], "pl3": h[3], "pl1": h[4]}}


def _make_birthday(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    return "", {"day": rng.randint(1, 28), "m": _month(rng.choice(MONTHS)), "by": rng.randint(1958, 2005)}


def _make_diet(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    d = rng.choice(DIETS)
    f = g == "f"
    return "", {"d": {"en3": d[0], "en1": d[1], "pl3": d[3] if f else d[2], "pl1": d[5] if f else d[4],
                      "avoid_en": d[6], "avoid_pl": d[7]}}


def _make_schedule(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    a, w = rng.choice(ACTIVITIES), rng.choice(WEEKDAYS)
    t = f"{rng.randint(6, 20)}:{rng.choice(('00', '15', '30', '45'))}"
    return a[1], {"a": {"en3": a[0], "en1": a[1], "pl": a[2]}, "w": {"en": w[0], "sg": w[1], "pl": w[2]}, "t": t}


def _make_family(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    r = rng.choice(RELATIVES)
    rn = rng.choice([n for n in NAMES_PL + NAMES_EN if n[2] == r[5]])[0]
    rel = {"en": r[0], "nom": r[1], "Nom": r[1].capitalize(), "acc": r[2], "rel": r[3], "my": r[4]}
    return r[0], {"r": rel, "rn": rn, "c": _place(rng.choice(CITIES))}


def _make_favourite(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    m = rng.choice(MEDIA)
    t = rng.choice(TITLES[m[0]])
    return m[0], {"m": {"en": m[0], "q": m[1], "ins": m[2], "acc": m[3], "my": m[4]}, "t": {"en": t[0], "pl": t[1]}}


def _make_injury(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    b, a = rng.choice(BODY_PARTS), rng.choice(INJURY_ACTIVITIES)
    return b[0], {"b": {"en": b[0], "pl": b[1]}, "a": {"en": a[0], "pl": a[1]},
                  "m": _month(rng.choice(MONTHS)), "y": rng.randint(2015, 2025)}


def _make_goal(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    goal = rng.choice(GOALS)
    return goal[0], {"g": {"en": goal[0], "pl": goal[1]}, "y": rng.randint(2025, 2031)}


def _make_learning(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    s = rng.choice(SKILLS)
    return s[0], {"s": {"en": s[0], "pl": s[1]}, "k": rng.randint(2, 9)}


def _make_pet(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    s = rng.choice(SPECIES)
    sp = {"en": s[0], "nom": s[1], "acc": s[2], "ins": s[3], "rel": s[4], "my": s[5]}
    return s[0], {"s": sp, "p": rng.choice(PET_NAMES)}


def _make_dislike(rng: random.Random, g: str) -> tuple[str, dict[str, Any]]:
    x = rng.choice(DISLIKES)
    return "", {"x": {"en": x[0], "pl": x[1]}}


# `<masculine|feminine>` picks a form by the subject's gender; `{...}` are str.format slots,
# `{n}` / `{ng}` the subject's name in the nominative / genitive.
FACT_TYPES: tuple[FactType, ...] = (
    FactType("trip", 3.0, _make_trip,
             doc={"en": ("{n} travelled to {d[en]} in {m[en]} {y} {p[en]}.",
                         "{n} went to {d[en]} {p[en]} in {m[en]} {y}.",
                         "In {m[en]} {y}, {n} visited {d[en]} {p[en]}."),
                  "pl": ("{n} <pojechał|pojechała> do {d[gen]} {m[loc]} {y} r. {p[go]}.",
                         "{m[Loc]} {y} r. {n} <był|była> {d[loc]} {p[stay]}.")},
             ask={"en": ("When did {n} travel to {d[en]}?", "When was {n} in {d[en]}, and why?"),
                  "pl": ("Kiedy {n} <był|była> {d[loc]}?", "Po co i kiedy {n} <pojechał|pojechała> do {d[gen]}?")},
             say={"en": ("In {m[en]} {y} I went to {d[en]} {p[en]}.",),
                  "pl": ("{m[Loc]} {y} r. <byłem|byłam> {d[loc]} {p[stay]}.",)}),
    FactType("home", 0.6, _make_home,
             doc={"en": ("{n} lives in {c[en]}.", "{n} has been living in {c[en]} for {k} years."),
                  "pl": ("{n} mieszka {c[loc]}.", "{n} od {k} lat mieszka {c[loc]}.")},
             ask={"en": ("Where does {n} live?", "Which city is {n} based in?"),
                  "pl": ("Gdzie mieszka {n}?", "W jakim mieście mieszka {n}?")},
             say={"en": ("I've lived in {c[en]} for {k} years now.",), "pl": ("Mieszkam {c[loc]} od {k} lat.",)}),
    FactType("job", 0.6, _make_job,
             doc={"en": ("{n} works as {j[en]} {w[en]}.", "{n} earns a living as {j[en]}, working {w[en]}."),
                  "pl": ("{n} pracuje jako {j[pl]} {w[pl]}.",
                         "{n} jest <zatrudniony|zatrudniona> jako {j[pl]} i pracuje {w[pl]}.")},
             ask={"en": ("What does {n} do for a living?", "Where does {n} work?"),
                  "pl": ("Czym zawodowo zajmuje się {n}?", "Gdzie pracuje {n}?")},
             say={"en": ("I work as {j[en]} {w[en]}.",), "pl": ("Pracuję jako {j[pl]} {w[pl]}.",)}),
    FactType("allergy", 0.6, _make_allergy,
             doc={"en": ("{n} is allergic to {a[en]}.",
                         "{n} has an allergy to {a[en]} and carries medication just in case."),
                  "pl": ("{n} ma alergię na {a[pl]}.",
                         "{n} jest <uczulony|uczulona> na {a[pl]} i na wszelki wypadek nosi przy sobie leki.")},
             ask={"en": ("What is {n} allergic to?", "Does {n} have any allergies?"),
                  "pl": ("Na co <uczulony|uczulona> jest {n}?", "Czy {n} ma jakąś alergię?")},
             say={"en": ("Just so you know, I'm allergic to {a[en]}.",),
                  "pl": ("Dla jasności: mam alergię na {a[pl]}.",)}),
    FactType("drink", 0.6, _make_drink,
             doc={"en": ("{n} prefers {a[en]} to {b[en]}.", "{n} usually orders {a[en]} instead of {b[en]}."),
                  "pl": ("{n} woli {a[acc]} od {b[gen]}.", "{n} zwykle zamawia {a[acc]} zamiast {b[gen]}.")},
             ask={"en": ("What does {n} like to drink?", "Which drink does {n} prefer?"),
                  "pl": ("Co lubi pić {n}?", "Jaki napój preferuje {n}?")},
             say={"en": ("Honestly, I prefer {a[en]} to {b[en]}.",),
                  "pl": ("Szczerze mówiąc, wolę {a[acc]} od {b[gen]}.",)}),
    FactType("hobby", 0.6, _make_hobby,
             doc={"en": ("On weekends {n} usually {h[en3]}.", "{n} spends most weekends {h[ing]}."),
                  "pl": ("W weekendy {n} zwykle {h[pl3]}.", "{n} w wolnym czasie najczęściej {h[pl3]}.")},
             ask={"en": ("What does {n} do on weekends?", "How does {n} like to spend free time?"),
                  "pl": ("Co {n} robi w weekendy?", "Jak {n} spędza wolny czas?")},
             say={"en": ("On weekends I usually {h[en1]}.",), "pl": ("W weekendy zwykle {h[pl1]}.",)}),
    FactType("birthday", 0.6, _make_birthday,
             doc={"en": ("{n}'s birthday is on {day} {m[en]}.", "{n} was born on {day} {m[en]} {by}."),
                  "pl": ("{n} ma urodziny {day} {m[gen]}.", "{n} <urodził|urodziła> się {day} {m[gen]} {by} r.")},
             ask={"en": ("When is {n}'s birthday?", "What is {n}'s date of birth?"),
                  "pl": ("Kiedy {n} ma urodziny?", "Kiedy <urodził|urodziła> się {n}?")},
             say={"en": ("My birthday is on {day} {m[en]}.",), "pl": ("Urodziny mam {day} {m[gen]}.",)}),
    FactType("diet", 0.6, _make_diet,
             doc={"en": ("{n} {d[en3]} and avoids {d[avoid_en]}.",
                         "{n} {d[en3]}, so meal suggestions should not include {d[avoid_en]}."),
                  "pl": ("{n} {d[pl3]} i unika {d[avoid_pl]}.",
                         "{n} {d[pl3]}, więc w propozycjach posiłków nie powinno być {d[avoid_pl]}.")},
             ask={"en": ("What diet does {n} follow?", "Which foods does {n} avoid?"),
                  "pl": ("Jaką dietę stosuje {n}?", "Jakich produktów unika {n}?")},
             say={"en": ("I {d[en1]}, so please no {d[avoid_en]}.",),
                  "pl": ("{d[pl1]}, więc proszę bez {d[avoid_pl]}.",)}),
    FactType("schedule", 1.5, _make_schedule,
             doc={"en": ("{n} {a[en3]} on {w[en]} at {t}.", "Every week on {w[en]} at {t}, {n} {a[en3]}."),
                  "pl": ("{n} chodzi {a[pl]} {w[pl]} o {t}.", "{n} regularnie, {w[pl]} o godzinie {t}, chodzi {a[pl]}.")},
             ask={"en": ("When does {n} {a[en1]}?", "On what day and at what time does {n} {a[en1]}?"),
                  "pl": ("Kiedy {n} chodzi {a[pl]}?", "W jaki dzień i o której {n} chodzi {a[pl]}?")},
             say={"en": ("I {a[en1]} every {w[sg]} at {t}.",), "pl": ("Chodzę {a[pl]} {w[pl]} o {t}.",)}),
    FactType("family", 1.0, _make_family,
             doc={"en": ("{n} has a {r[en]} named {rn} who lives in {c[en]}.", "{n}'s {r[en]} {rn} lives in {c[en]}."),
                  "pl": ("{n} ma {r[acc]} o imieniu {rn}, {r[rel]} mieszka {c[loc]}.",
                         "{r[Nom]} {ng}, {rn}, mieszka {c[loc]}.")},
             ask={"en": ("What is the name of {n}'s {r[en]}?", "Where does {n}'s {r[en]} live?"),
                  "pl": ("Jak ma na imię {r[nom]} {ng}?", "Gdzie mieszka {r[nom]} {ng}?")},
             say={"en": ("My {r[en]} {rn} lives in {c[en]}.",), "pl": ("{r[my]} {r[nom]} {rn} mieszka {c[loc]}.",)}),
    FactType("favourite", 1.0, _make_favourite,
             doc={"en": ("{n}'s favourite {m[en]} is {t[en]}.",
                         "{n} keeps coming back to {t[en]}, <his|her> favourite {m[en]}."),
                  "pl": ("{m[ins]} {ng} jest {t[pl]}.", "{n} uważa {t[pl]} za {m[acc]}.")},
             ask={"en": ("What is {n}'s favourite {m[en]}?", "Which {m[en]} does {n} like most?"),
                  "pl": ("{m[q]} {ng}?", "Co {n} uważa za {m[acc]}?")},
             say={"en": ("My favourite {m[en]} is {t[en]}.",), "pl": ("{m[my]} to {t[pl]}.",)}),
    FactType("injury", 0.7, _make_injury,
             doc={"en": ("{n} broke <his|her> {b[en]} while {a[en]} in {m[en]} {y}.",
                         "In {m[en]} {y}, {n} suffered a broken {b[en]} while {a[en]}."),
                  "pl": ("{n} <złamał|złamała> {b[pl]} podczas {a[pl]} {m[loc]} {y} r.",
                         "{m[Loc]} {y} r. {n} <złamał|złamała> {b[pl]}; stało się to podczas {a[pl]}.")},
             ask={"en": ("How did {n} break <his|her> {b[en]}?", "When did {n} break <his|her> {b[en]}?"),
                  "pl": ("Jak {n} <złamał|złamała> {b[pl]}?", "Kiedy {n} <złamał|złamała> {b[pl]}?")},
             say={"en": ("I broke my {b[en]} while {a[en]} in {m[en]} {y}.",),
                  "pl": ("{m[Loc]} {y} r. <złamałem|złamałam> {b[pl]} podczas {a[pl]}.",)}),
    FactType("goal", 1.0, _make_goal,
             doc={"en": ("{n} plans to {g[en]} by {y}.", "{n}'s goal is to {g[en]} before the end of {y}."),
                  "pl": ("{n} planuje {g[pl]} do {y} roku.", "{n} chce {g[pl]} najpóźniej w {y} roku.")},
             ask={"en": ("By when does {n} want to {g[en]}?", "What deadline has {n} set to {g[en]}?"),
                  "pl": ("Do kiedy {n} chce {g[pl]}?", "Kiedy {n} planuje {g[pl]}?")},
             say={"en": ("I want to {g[en]} by {y}.",), "pl": ("Chcę {g[pl]} do {y} roku.",)}),
    FactType("learning", 1.0, _make_learning,
             doc={"en": ("{n} has been learning {s[en]} for {k} years.",
                         "{n} started learning {s[en]} {k} years ago and practises regularly."),
                  "pl": ("{n} uczy się {s[pl]} od {k} lat.", "{n} od {k} lat regularnie uczy się {s[pl]}.")},
             ask={"en": ("How long has {n} been learning {s[en]}?", "Since when has {n} been studying {s[en]}?"),
                  "pl": ("Od jak dawna {n} uczy się {s[pl]}?", "Ile lat {n} uczy się już {s[pl]}?")},
             say={"en": ("I've been learning {s[en]} for {k} years.",), "pl": ("Uczę się {s[pl]} od {k} lat.",)}),
    FactType("pet", 1.0, _make_pet,
             doc={"en": ("{n} has a {s[en]} named {p}.", "{n}'s {s[en]} is called {p}."),
                  "pl": ("{n} ma {s[acc]} o imieniu {p}.", "{n} opiekuje się {s[ins]}, {s[rel]} wabi się {p}.")},
             ask={"en": ("What is the name of {n}'s {s[en]}?", "What is {n}'s {s[en]} called?"),
                  "pl": ("Jak wabi się {s[nom]} {ng}?", "Jak ma na imię {s[nom]} {ng}?")},
             say={"en": ("My {s[en]} is called {p}.",), "pl": ("{s[my]} {s[nom]} wabi się {p}.",)}),
    FactType("dislike", 0.6, _make_dislike,
             doc={"en": ("{n} dislikes {x[en]}.", "{n} can't stand {x[en]}."),
                  "pl": ("{n} nie znosi {x[pl]}.", "{n} bardzo nie lubi {x[pl]}.")},
             ask={"en": ("What does {n} dislike?", "What annoys {n} the most?"),
                  "pl": ("Czego nie lubi {n}?", "Czego {n} nie znosi?")},
             say={"en": ("I really can't stand {x[en]}.",), "pl": ("Naprawdę nie znoszę {x[pl]}.",)}),
)
_FT_CUM = list(itertools.accumulate(ft.weight for ft in FACT_TYPES))
_GENDER_RE = re.compile(r"<([^<>|]*)\|([^<>|]*)>")


@cache
def _gendered(template: str, gender: str) -> str:
    return _GENDER_RE.sub(lambda m: m.group(1) if gender == "m" else m.group(2), template)


def render(template: str, gender: str, slots: dict[str, Any], name: str = "", name_gen: str = "") -> str:
    """Fill a template: gender markers first, then str.format slots."""
    return _gendered(template, gender).format(n=name, ng=name_gen, **slots)


# --------------------------------------------------------------------------- corpus
@dataclass
class Corpus:
    """All rows of one synthetic Honcho database plus the labelled query set.

    Row dicts carry the table's columns under their column names (`metadata` is Honcho's
    h_metadata); `message_embeddings` rows also carry `chunk_index`, which is not a column.
    `qrels[qid]` maps document ids to relevance (1 = states the asked fact; only live,
    non-blank documents in the query's collection are labelled).
    """

    seed: int
    workspaces: list[Row] = field(default_factory=list)
    peers: list[Row] = field(default_factory=list)
    sessions: list[Row] = field(default_factory=list)
    collections: list[Row] = field(default_factory=list)
    messages: list[Row] = field(default_factory=list)
    documents: list[Row] = field(default_factory=list)
    message_embeddings: list[Row] = field(default_factory=list)
    queries: list[Row] = field(default_factory=list)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {
            "workspaces": len(self.workspaces), "peers": len(self.peers), "sessions": len(self.sessions),
            "collections": len(self.collections), "messages": len(self.messages),
            "documents": len(self.documents), "message_embeddings": len(self.message_embeddings),
            "queries": len(self.queries), "qrels": sum(len(v) for v in self.qrels.values()),
        }


# (workspace name, share of Polish, assistant peer name)
WORKSPACES = (("asystent-pl", 0.8, "asystent"), ("assistant-en", 0.2, "assistant"), ("bilingual-lab", 0.5, "assistant"))
QUERY_STRATA = (("pl", "pl"), ("pl", "en"), ("en", "pl"), ("en", "en"), ("pl", "en+pl"), ("en", "en+pl"))


@dataclass
class _User:
    peer: str
    ws: str
    p_pl: float
    nom: str
    gen: str
    gender: str
    sessions: list[tuple[str, str]] = field(default_factory=list)  # (session name, language)
    collections: list[tuple[str, str]] = field(default_factory=list)  # (observer, observed)
    used: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True)
class _Said:
    """A fact a chat line states: its type, its once-per-peer key, its slot values, the language."""

    ftype: FactType
    key: str
    slots: dict[str, Any]
    lang: str


@dataclass
class _Fact:
    fid: str
    ftype: FactType
    user: _User
    slots: dict[str, Any]
    observer: str
    docs: list[tuple[str, str]] = field(default_factory=list)  # (doc id, lang)


def _chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Split at whitespace into pieces of at most `size` characters that concatenate back to `text`."""
    if len(text) <= size:
        return [text]
    out, i = [], 0
    while i < len(text):
        j = min(len(text), i + size)
        if j < len(text):
            k = text.rfind(" ", i + size // 2, j)
            if k > i:
                j = k + 1
        out.append(text[i:j])
        i = j
    return out


class _Gen:
    """One generation run; separate RNG streams keep each part stable when another changes."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.ids = random.Random(f"embed.honcho:{seed}:ids")
        self.used_ids: set[str] = set()
        self.c = Corpus(seed=seed)
        self.stated: list[tuple[int, datetime, _User, str, _Said]] = []  # (message id, at, user, session, fact)

    def rng(self, part: str) -> random.Random:
        return random.Random(f"embed.honcho:{self.seed}:{part}")

    def nanoid(self) -> str:
        while True:
            # 21 url-safe base64 characters = 126 random bits, the alphabet nanoid uses.
            nid = base64.urlsafe_b64encode(self.ids.getrandbits(128).to_bytes(16, "big"))[:NANOID_SIZE].decode()
            if nid not in self.used_ids:
                self.used_ids.add(nid)
                return nid

    # ---- structure: workspaces, peers, sessions, collections
    def structure(self, n_users: int) -> list[_User]:
        rng = self.rng("structure")
        c = self.c
        for ws, _, assistant in WORKSPACES:
            created = EPOCH - timedelta(days=rng.randint(30, 90))
            c.workspaces.append({"id": self.nanoid(), "name": ws, "created_at": created, "metadata": {},
                                 "internal_metadata": {}, "configuration": {}})
            c.peers.append({"id": self.nanoid(), "name": assistant, "metadata": {"role": "assistant"},
                            "internal_metadata": {}, "created_at": created, "workspace_name": ws,
                            "configuration": {}})
        users: list[_User] = []
        for i in range(n_users):
            ws, p_pl, assistant = WORKSPACES[i % len(WORKSPACES)]
            nom, gen, gender = rng.choice(NAMES_PL if rng.random() < 0.7 else NAMES_EN)
            u = _User(peer=f"{nom.lower()}-{i:04d}", ws=ws, p_pl=p_pl, nom=nom, gen=gen, gender=gender)
            created = EPOCH + timedelta(days=rng.uniform(0, SPAN_DAYS - 60))
            c.peers.append({"id": self.nanoid(), "name": u.peer, "metadata": {"display_name": nom},
                            "internal_metadata": {}, "created_at": created, "workspace_name": ws,
                            "configuration": {}})
            for k in range(rng.randint(1, 3)):
                lang = "pl" if rng.random() < p_pl else "en"
                sname = f"{u.peer}-s{k + 1}"
                u.sessions.append((sname, lang))
                c.sessions.append({"id": self.nanoid(), "name": sname, "is_active": rng.random() < 0.8,
                                   "metadata": {"lang": lang}, "internal_metadata": {},
                                   "created_at": created + timedelta(days=rng.uniform(0, 50)),
                                   "workspace_name": ws, "configuration": {}})
            u.collections.append((u.peer, u.peer))
            if rng.random() < 0.35:
                u.collections.append((assistant, u.peer))
            for observer, observed in u.collections:
                c.collections.append({"id": self.nanoid(), "observer": observer, "observed": observed,
                                      "created_at": created, "metadata": {}, "internal_metadata": {},
                                      "workspace_name": ws})
            users.append(u)
        return users

    # ---- messages and their embedding chunk rows
    def chat_fact(self, rng: random.Random, lang: str, gender: str) -> tuple[str, _Said]:
        """A first-person chat line and the fact it states (what Honcho's deriver would conclude)."""
        ft = rng.choices(FACT_TYPES, cum_weights=_FT_CUM)[0]
        key, slots = ft.make(rng, gender)
        return render(rng.choice(ft.say[lang]), gender, slots), _Said(ft, key, slots, lang)

    def chat_line(self, rng: random.Random, lang: str, gender: str) -> str:
        return self.chat_fact(rng, lang, gender)[0]

    def assistant_line(self, rng: random.Random, lang: str, u: _User) -> str:
        """An acknowledgement, often restating a conclusion about the user (as LLM replies do)."""
        ack = rng.choice(ASSISTANT_LINES[lang])
        if rng.random() < 0.4:
            return ack
        ft = rng.choices(FACT_TYPES, cum_weights=_FT_CUM)[0]
        _, slots = ft.make(rng, u.gender)
        note = render(rng.choice(ft.doc[lang]), u.gender, slots, u.nom, u.gen)
        return f"{rng.choice(NOTED[lang])} {note} {ack}"

    def long_text(self, rng: random.Random, lang: str, gender: str, min_chars: int) -> str:
        parts: list[str] = []
        size = 0
        while size < min_chars:
            line = self.chat_line(rng, lang, gender)
            parts.append(line + ("\n\n" if len(parts) % 5 == 4 else " "))
            size += len(parts[-1])
        return "".join(parts).rstrip()

    def messages(self, users: list[_User], target: int) -> None:
        """Fill exactly `target` message_embeddings rows; record the facts user messages state."""
        rng = self.rng("messages")
        c = self.c
        sessions = [(u, s, lang) for u in users for s, lang in u.sessions]
        session_rows = {r["name"]: r for r in c.sessions}
        clock = {s: session_rows[s]["created_at"] + timedelta(minutes=rng.randint(0, 600)) for _, s, _ in sessions}
        seq: dict[str, int] = {s: 0 for _, s, _ in sessions}
        assistants = {ws: a for ws, _, a in WORKSPACES}
        old = [x for x in sessions if clock[x[1]] < OLD_STYLE_BEFORE]
        new = [x for x in sessions if clock[x[1]] >= OLD_STYLE_BEFORE]
        # Forced edge rows first: blank/emoji/odd texts, then one long message in an old-style
        # session (full text repeated per chunk) and one in a new-style session (real chunks).
        forced: list[tuple[tuple[_User, str, str], str | None]] = []
        if target >= 60:
            forced = [(rng.choice(sessions), text) for text in EDGE_MESSAGES]
            forced += [(rng.choice(old or sessions), None), (rng.choice(new or sessions), None)]
        rows = 0
        while rows < target:
            stated: list[_Said] = []
            if forced:
                (u, sname, lang), text = forced.pop(0)
                speaker = u.peer
                if text is None:
                    text = self.long_text(rng, lang, u.gender, LONG_MIN_CHARS + rng.randint(0, 4000))
            else:
                u, sname, lang = rng.choice(sessions)
                speaker = u.peer if seq[sname] % 2 == 0 else assistants[u.ws]
                roll = rng.random()
                if speaker != u.peer:
                    text = self.assistant_line(rng, lang, u)
                elif roll < 0.03:
                    text = self.long_text(rng, lang, u.gender, rng.randint(2500, 12000))
                elif roll < 0.09:
                    text = rng.choice(SHORT_REPLIES)
                else:
                    said = [self.chat_fact(rng, lang, u.gender) for _ in range(rng.randint(1, 3))]
                    text = " ".join(line for line, _ in said)
                    stated = [fact for _, fact in said]
                    greeting = rng.choice(GREETINGS[lang])
                    if greeting.endswith(", ") and not text.startswith(("I ", "I'")):
                        text = text[0].lower() + text[1:]
                    text = greeting + text
            pieces = _chunks(text)
            if len(pieces) > target - rows:  # would overshoot the exact row count: say something short
                text = rng.choice(SHORT_REPLIES)
                pieces = [text]
                stated = []
            seq[sname] += 1
            clock[sname] += timedelta(minutes=rng.randint(1, 30), seconds=rng.randint(0, 59))
            created = clock[sname]
            mid = len(c.messages) + 1
            public_id = self.nanoid()
            c.messages.append({"id": mid, "public_id": public_id, "session_name": sname, "content": text,
                               "metadata": {}, "internal_metadata": {}, "token_count": (len(text) + 3) // 4,
                               "seq_in_session": seq[sname], "created_at": created, "peer_name": speaker,
                               "workspace_name": u.ws})
            self.stated += [(mid, created, u, sname, fact) for fact in stated]
            old_style = created < OLD_STYLE_BEFORE and len(pieces) > 1
            for i, piece in enumerate(pieces):
                c.message_embeddings.append({
                    "content": text if old_style else piece, "message_id": public_id, "chunk_index": i,
                    "workspace_name": u.ws, "session_name": sname, "peer_name": speaker, "created_at": created,
                    "sync_state": "pending", "last_sync_at": None, "sync_attempts": 0,
                })
            rows += len(pieces)

    # ---- documents (memory conclusions)
    def documents(self, users: list[_User], target: int) -> list[_Fact]:
        """Conclusions derived the way Honcho's deriver writes them: each fact a user message
        states becomes documents restating it (in the message's language or the other one, or
        both) whose `message_ids` cite that message. Once the stated facts run out (a corpus with
        few messages), further facts are drawn fresh and carry no provenance (`message_ids` [])."""
        rng = self.rng("documents")
        edges: list[tuple[str, str]] = list(EDGE_DOCUMENTS) if target >= 4 * (len(EDGE_DOCUMENTS) + 2) else []
        if edges:
            edges.append((self.long_doc(rng, "pl", "Użytkownik", "Użytkownika", "m"), "pl"))
            edges.append((self.long_doc(rng, "en", "Alex", "Alex", "m"), "en"))
        need = target - len(edges)
        facts: list[_Fact] = []
        rows: list[Row] = []
        per_collection: dict[tuple[str, str, str], list[str]] = {}
        misses = 0
        stated = list(self.stated)
        rng.shuffle(stated)
        while len(rows) < need:
            if stated:
                mid, said_at, u, sname, said = stated.pop()
                ft, key, slots = said.ftype, said.key, said.slots
                source: tuple[int, datetime] | None = (mid, said_at)
            else:
                u = rng.choice(users)
                ft = rng.choices(FACT_TYPES, cum_weights=_FT_CUM)[0]
                key, slots = ft.make(rng, u.gender)
                source, sname = None, None
            if (ft.name, key) in u.used:
                misses += 1
                if misses > 100_000:
                    raise RuntimeError("synthetic corpus ran out of distinct facts")
                continue
            u.used.add((ft.name, key))
            observer = u.collections[0 if len(u.collections) == 1 or rng.random() < 0.75 else 1][0]
            fact = _Fact(fid=f"f{len(facts):06d}", ftype=ft, user=u, slots=slots, observer=observer)
            facts.append(fact)
            if rng.random() < CROSS_LINGUAL_SHARE:
                langs = ["pl", "en"]
            elif source is not None:  # restated in the message's language, or now and then the other one
                langs = [said.lang if rng.random() < 0.75 else {"pl": "en", "en": "pl"}[said.lang]]
            else:
                langs = ["pl" if rng.random() < u.p_pl else "en"]
            if source is not None:
                session, base = sname, source[1] + timedelta(minutes=rng.uniform(1, 60))
            else:
                session = rng.choice(u.sessions)[0] if rng.random() < 0.8 else None
                base = EPOCH + timedelta(days=rng.uniform(0, SPAN_DAYS))
            for lang in langs:
                for _ in range(rng.choices((1, 2, 3), cum_weights=(0.75, 0.95, 1.0))[0]):
                    if len(rows) >= need:
                        break
                    content = render(rng.choice(ft.doc[lang]), u.gender, slots, u.nom, u.gen)
                    created = base + timedelta(hours=rng.uniform(0, 72))
                    row = self.doc_row(rng, u, observer, session, content, created, source, per_collection)
                    row["internal_metadata"]["synthetic"] = {"fact": fact.fid, "type": ft.name, "lang": lang}
                    fact.docs.append((row["id"], lang))
                    rows.append(row)
        for content, lang in edges:
            u = rng.choice(users)
            observer, _ = rng.choice(u.collections)
            created = EPOCH + timedelta(days=rng.uniform(0, SPAN_DAYS))
            row = self.doc_row(rng, u, observer, None, content, created, None, per_collection, edge=True)
            row["internal_metadata"]["synthetic"] = {"fact": None, "type": "edge", "lang": lang}
            rows.append(row)
        rng.shuffle(rows)
        self.c.documents = rows
        return facts

    def long_doc(self, rng: random.Random, lang: str, nom: str, gen: str, gender: str) -> str:
        head = "Podsumowanie pamięci o użytkowniku:\n" if lang == "pl" else "Memory summary for the user:\n"
        parts = [head]
        size = len(head)
        while size < LONG_MIN_CHARS + 1000:
            ft = rng.choices(FACT_TYPES, cum_weights=_FT_CUM)[0]
            _, slots = ft.make(rng, gender)
            parts.append(render(rng.choice(ft.doc[lang]), gender, slots, nom, gen) + " ")
            size += len(parts[-1])
        return "".join(parts).rstrip()

    def doc_row(self, rng: random.Random, u: _User, observer: str, session: str | None, content: str,
                created: datetime, source: tuple[int, datetime] | None,
                per_collection: dict[tuple[str, str, str], list[str]], edge: bool = False) -> Row:
        """One documents row; `source` is the (messages.id, created_at) it was derived from, if any."""
        level = "explicit" if edge else rng.choices(LEVELS, cum_weights=_LEVEL_CUM)[0]
        meta: dict[str, Any] = {
            "message_ids": [source[0]] if source else [],
            "message_created_at": (source[1] if source else created).isoformat(timespec="seconds"),
        }
        earlier = per_collection.setdefault((u.ws, observer, u.peer), [])
        source_ids = None
        if level in ("deductive", "inductive") and earlier:
            source_ids = rng.sample(earlier, min(len(earlier), rng.randint(1, 2)))
            meta["source_ids"] = source_ids
            if level == "inductive":
                meta["pattern_type"] = rng.choice(("preference", "behavior", "tendency"))
                meta["confidence"] = rng.choice(("high", "medium", "low"))
        doc_id = self.nanoid()
        earlier.append(doc_id)
        deleted = None
        if not edge and rng.random() < DELETED_SHARE:
            deleted = created + timedelta(days=rng.uniform(1, 90))
        return {
            "id": doc_id, "content": content, "level": level,
            "times_derived": 1 if rng.random() < 0.85 else rng.randint(2, 4), "source_ids": source_ids,
            "internal_metadata": meta, "created_at": created, "observer": observer, "observed": u.peer,
            "workspace_name": u.ws, "session_name": session, "deleted_at": deleted,
            "sync_state": "pending", "last_sync_at": None, "sync_attempts": 0,
        }

    # ---- labelled queries
    def queries(self, facts: list[_Fact], n: int) -> None:
        rng = self.rng("queries")
        live = {r["id"] for r in self.c.documents if r["deleted_at"] is None and r["content"].strip()}
        buckets: dict[str, list[tuple[_Fact, list[str]]]] = {"pl": [], "en": [], "en+pl": []}
        for f in facts:
            ids = [d for d, _ in f.docs if d in live]
            langs = sorted({lang for d, lang in f.docs if d in live})
            if ids:
                buckets["+".join(langs)].append((f, ids))
        for b in buckets.values():
            rng.shuffle(b)
        i = 0
        stalled = 0
        while len(self.c.queries) < n and stalled < len(QUERY_STRATA):
            qlang, doc_langs = QUERY_STRATA[i % len(QUERY_STRATA)]
            i += 1
            if not buckets[doc_langs]:
                stalled += 1
                continue
            stalled = 0
            f, ids = buckets[doc_langs].pop()
            u = f.user
            qid = f"q{len(self.c.queries):04d}"
            text = render(rng.choice(f.ftype.ask[qlang]), u.gender, f.slots, u.nom, u.gen)
            self.c.queries.append({"qid": qid, "text": text, "lang": qlang, "doc_langs": doc_langs,
                                   "fact_type": f.ftype.name, "workspace_name": u.ws,
                                   "observer": f.observer, "observed": u.peer})
            self.c.qrels[qid] = {d: 1 for d in sorted(ids)}


def generate(seed: int = 7, documents: int = 2000, messages: int = 1000, queries: int | None = None) -> Corpus:
    """Build the corpus: exactly `documents` document rows and `messages` message_embeddings rows
    (long messages yield several chunk rows, so there are fewer `messages` rows).

    `queries` defaults to documents // 40 clamped to 24..600, drawn evenly over the query/document
    language strata pl→pl, pl→en, en→pl, en→en, pl→both, en→both.
    """
    for name, v in (("seed", seed), ("documents", documents), ("messages", messages)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    if queries is None:
        queries = max(24, min(600, documents // 40))
    gen = _Gen(seed)
    users = gen.structure(max(6, documents // 60))
    gen.messages(users, messages)
    facts = gen.documents(users, documents)
    gen.queries(facts, queries)
    return gen.c
