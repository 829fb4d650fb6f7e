"""Deterministic Nordic retail data: customers generated lazily, group memberships planned up front.

A tenant of a million customers must build in seconds and fit in little memory, so customers are
never stored: each one is a pure function of (seed, tenant index, customer index). The fields a
list can be sorted by (names, createdAt) come from a cheap integer hash so an on-demand sort does
not have to build whole records; everything else comes from a ``random.Random`` seeded per
customer. Customer uids are fixed-width (``cust-0000042``) so integer order equals string order.
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

_T = TypeVar("_T")

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15

CUSTOMER_PREFIX = "cust-"
GROUP_PREFIX = "grp-"
MEMBERSHIPS_PER_CUSTOMER = 2.5
# Customers whose index is 19 modulo 20 are never put in a group at build time, so every tenant
# has customers that only an out-of-band change can bring into a list.
UNGROUPED_EVERY = 20
BIG_GROUP_SIZE = 5000
SPECIAL_GROUPS = 4  # empty, exactly 1, exactly 100, thousands

_CREATED_FROM = 1_420_070_400_000  # 2015-01-01T00:00:00Z in ms
_CREATED_SPAN = 331_171_200_000  # until 2025-07-01
_MODIFIED_UNTIL = 1_759_276_800_000  # 2025-10-01T00:00:00Z


def mix64(value: int) -> int:
    """SplitMix64 finalizer: a fast, well-spread hash so per-customer fields need no stored state."""
    z = (value + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


@functools.lru_cache(maxsize=8192)
def _day(days: int) -> str:
    """Day strings repeat across customers, so caching them makes timestamps cheap."""
    return time.strftime("%Y-%m-%d", time.gmtime(days * 86_400))


def iso_from_ms(epoch_ms: int) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``: one fixed format so string order equals time order."""
    days, rest = divmod(epoch_ms, 86_400_000)
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_day(days)}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


class FastRandom(random.Random):
    """``random.Random`` with float-based choice/randint/randrange: several times faster, and exact
    enough for test data (the generator draws millions of values per page of a big tenant)."""

    def choice(self, seq: SupportsLenAndGetItem[_T]) -> _T:
        """Pick one element using a single float draw."""
        return seq[int(self.random() * len(seq))]

    def randint(self, a: int, b: int) -> int:
        """Integer in [a, b] from a single float draw."""
        return a + int(self.random() * (b - a + 1))

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        """Integer in range(start, stop, step) from a single float draw."""
        if stop is None:
            return int(self.random() * start)
        return start + step * int(self.random() * ((stop - start + step - 1) // step))


def now_ms() -> int:
    """Wall clock in ms, the only non-deterministic input (timestamps of changes made while serving)."""
    return time.time_ns() // 1_000_000


_FIRST = {
    "NO": [
        "Ola",
        "Kari",
        "Per",
        "Ingrid",
        "Lars",
        "Anne",
        "Magnus",
        "Sigrid",
        "Henrik",
        "Ingvild",
        "Øystein",
        "Åse",
        "Bjørn",
        "Solveig",
        "Håkon",
        "Marit",
        "Torbjørn",
        "Ragnhild",
        "Jørgen",
        "Liv",
    ],
    "SE": [
        "Erik",
        "Anna",
        "Lars",
        "Karin",
        "Johan",
        "Maria",
        "Anders",
        "Elin",
        "Björn",
        "Åsa",
        "Mikael",
        "Linnéa",
        "Sven",
        "Ingrid",
        "Oskar",
        "Märta",
        "Göran",
        "Ebba",
        "Nils",
        "Frida",
    ],
    "DK": [
        "Jens",
        "Mette",
        "Søren",
        "Hanne",
        "Mads",
        "Camilla",
        "Rasmus",
        "Line",
        "Niels",
        "Signe",
        "Kasper",
        "Birgitte",
        "Frederik",
        "Ida",
        "Morten",
        "Louise",
        "Anders",
        "Sofie",
        "Jørgen",
        "Karen",
    ],
    "FI": [
        "Mikko",
        "Aino",
        "Juha",
        "Laura",
        "Antti",
        "Sanna",
        "Jussi",
        "Johanna",
        "Matti",
        "Päivi",
        "Ville",
        "Emilia",
        "Timo",
        "Tiina",
        "Jari",
        "Helmi",
        "Pekka",
        "Katja",
        "Eero",
        "Sari",
    ],
}
_LAST = {
    "NO": [
        "Hansen",
        "Johansen",
        "Olsen",
        "Larsen",
        "Andersen",
        "Pedersen",
        "Nilsen",
        "Kristiansen",
        "Jensen",
        "Karlsen",
        "Johnsen",
        "Pettersen",
        "Eriksen",
        "Berg",
        "Haugen",
        "Hagen",
        "Johannessen",
        "Andreassen",
        "Jacobsen",
        "Dahl",
        "Jørgensen",
        "Halvorsen",
        "Lie",
        "Bakken",
        "Sæther",
        "Solberg",
        "Strand",
        "Moe",
        "Nygård",
        "Kvamme",
    ],
    "SE": [
        "Andersson",
        "Johansson",
        "Karlsson",
        "Nilsson",
        "Eriksson",
        "Larsson",
        "Olsson",
        "Persson",
        "Svensson",
        "Gustafsson",
        "Pettersson",
        "Jonsson",
        "Jansson",
        "Hansson",
        "Bengtsson",
        "Jönsson",
        "Lindberg",
        "Jakobsson",
        "Magnusson",
        "Lindström",
        "Olofsson",
        "Lindqvist",
        "Lindgren",
        "Berg",
        "Axelsson",
        "Bergström",
        "Lundberg",
        "Lind",
        "Lundgren",
        "Åberg",
    ],
    "DK": [
        "Nielsen",
        "Jensen",
        "Hansen",
        "Pedersen",
        "Andersen",
        "Christensen",
        "Larsen",
        "Sørensen",
        "Rasmussen",
        "Jørgensen",
        "Petersen",
        "Madsen",
        "Kristensen",
        "Olsen",
        "Thomsen",
        "Christiansen",
        "Poulsen",
        "Johansen",
        "Møller",
        "Mortensen",
        "Knudsen",
        "Jakobsen",
        "Mikkelsen",
        "Olesen",
        "Frederiksen",
        "Laursen",
        "Henriksen",
        "Lund",
        "Holm",
        "Schmidt",
    ],
    "FI": [
        "Korhonen",
        "Virtanen",
        "Mäkinen",
        "Nieminen",
        "Mäkelä",
        "Hämäläinen",
        "Laine",
        "Heikkinen",
        "Koskinen",
        "Järvinen",
        "Lehtonen",
        "Lehtinen",
        "Saarinen",
        "Salminen",
        "Heinonen",
        "Niemi",
        "Heikkilä",
        "Kinnunen",
        "Salonen",
        "Turunen",
        "Salo",
        "Laitinen",
        "Tuominen",
        "Rantanen",
        "Karjalainen",
        "Jokinen",
        "Mattila",
        "Savolainen",
        "Lahtinen",
        "Ahonen",
    ],
}
_STREETS = {
    "NO": [
        "Storgata",
        "Kirkegata",
        "Kongens gate",
        "Dronningens gate",
        "Bygdøy allé",
        "Thorvald Meyers gate",
        "Markveien",
        "Strandgaten",
        "Olav Tryggvasons gate",
        "Skippergata",
        "Fjellveien",
        "Sjøgata",
    ],
    "SE": [
        "Drottninggatan",
        "Storgatan",
        "Kungsgatan",
        "Sveavägen",
        "Götgatan",
        "Vasagatan",
        "Södra vägen",
        "Järnvägsgatan",
        "Linnégatan",
        "Östra Hamngatan",
    ],
    "DK": [
        "Vesterbrogade",
        "Nørrebrogade",
        "Strøget",
        "Østerbrogade",
        "Algade",
        "Søndergade",
        "Jernbanegade",
        "Amagerbrogade",
        "Frederiksberg Allé",
        "Gammel Kongevej",
    ],
    "FI": [
        "Mannerheimintie",
        "Aleksanterinkatu",
        "Hämeenkatu",
        "Kauppakatu",
        "Rautatienkatu",
        "Esplanadi",
        "Puistokatu",
        "Yliopistonkatu",
        "Itäinen Pitkäkatu",
        "Hämeentie",
    ],
}
# (city, lowest postal code, highest postal code) as integers; formatted per country.
_CITIES = {
    "NO": [
        ("Oslo", 150, 1295),
        ("Bergen", 5003, 5099),
        ("Trondheim", 7010, 7099),
        ("Stavanger", 4005, 4099),
        ("Tromsø", 9006, 9020),
        ("Kristiansand", 4608, 4639),
        ("Drammen", 3015, 3048),
        ("Bodø", 8003, 8023),
    ],
    "SE": [
        ("Stockholm", 11120, 11899),
        ("Göteborg", 41101, 41879),
        ("Malmö", 21115, 21774),
        ("Uppsala", 75220, 75758),
        ("Västerås", 72210, 72481),
        ("Örebro", 70210, 70382),
        ("Linköping", 58222, 58758),
    ],
    "DK": [
        ("København K", 1050, 1472),
        ("Aarhus C", 8000, 8000),
        ("Odense C", 5000, 5000),
        ("Aalborg", 9000, 9000),
        ("Esbjerg", 6700, 6715),
        ("Randers C", 8900, 8900),
    ],
    "FI": [
        ("Helsinki", 100, 990),
        ("Espoo", 2100, 2940),
        ("Tampere", 33100, 33960),
        ("Turku", 20100, 20960),
        ("Oulu", 90100, 90940),
        ("Jyväskylä", 40100, 40950),
    ],
}
_EMAIL_DOMAINS = {
    "NO": ["gmail.com", "online.no", "hotmail.no", "outlook.com", "icloud.com"],
    "SE": ["gmail.com", "hotmail.se", "telia.com", "outlook.com"],
    "DK": ["gmail.com", "hotmail.dk", "mail.dk", "outlook.dk"],
    "FI": ["gmail.com", "elisanet.fi", "hotmail.fi", "outlook.com"],
}
_DIALLING_CODES = {"NO": "+47", "SE": "+46", "DK": "+45", "FI": "+358"}
_LEGAL_FORMS = {"NO": ["AS", "AS", "ASA"], "SE": ["AB"], "DK": ["ApS", "A/S"], "FI": ["Oy", "Oyj"]}
_COMPANY_WORDS = [
    "Nordlys",
    "Fjell",
    "Fjord",
    "Vik",
    "Berg",
    "Skog",
    "Havbris",
    "Polar",
    "Midnatt",
    "Nord",
    "Sol",
    "Elv",
    "Tind",
    "Granitt",
    "Bølge",
    "Lyng",
    "Furu",
    "Birk",
    "Skjær",
    "Øya",
]
_COMPANY_TRADES = [
    "Handel",
    "Bygg",
    "Sport",
    "Interiør",
    "Mat",
    "Elektro",
    "Data",
    "Regnskap",
    "Transport",
    "Konsult",
    "Design",
    "Eiendom",
    "Catering",
    "Optikk",
]
_DEPARTMENTS = ["Innkjøp", "Avd. Vest", "Avd. Øst", "Lager", "Butikkdrift", "Økonomi"]
_ACCOUNT_MANAGERS = [
    ("usr-0001", "Kari Nordmann", "KN"),
    ("usr-0002", "Sven Lindqvist", "SL"),
    ("usr-0003", "Mette Holm", "MH"),
    ("usr-0004", "Aino Virtanen", "AV"),
    ("usr-0005", "Ola Berg", "OB"),
]
_STORES = [
    ("store-001", "Flow Store Oslo City"),
    ("store-002", "Flow Store Bergen Storsenter"),
    ("store-003", "Flow Store Stockholm Gallerian"),
    ("store-004", "Flow Store København Strøget"),
    ("store-005", "Flow Store Helsinki Kamppi"),
    ("webshop", "Nettbutikk"),
]
_ORIGINS = ["pos", "pos", "webshop", "webshop", "import", "api", ""]
_CONSENT_SOURCES = ["pos", "webshop", "myPage", "import", "customerService"]
_CONSENTS = [("newsletter", 0.6), ("sms", 0.35), ("email_marketing", 0.45)]
_NOTES = [
    "Ønsker faktura på e-post",
    "Kunde siden 2012",
    "Ring før levering",
    "Stamkund \u2013 ge 10 % rabatt",
    "Kontakt via innkjøpsavdelingen",
    "Leveres til bakdør",
    "Foretrækker SMS",
    "Toimitus arkisin",
]
_CONTACT_ROLES = ["ADMIN", "PURCHASER", "ACCOUNTING", "NONE"]
_PRICELISTS_COMPANY = ["", "pl-b2b-standard", "pl-b2b-gold", "pl-wholesale"]
_STAFF = [
    "kari.nordmann@flowretail.example",
    "sven.lindqvist@flowretail.example",
    "mette.holm@flowretail.example",
    "system",
]
_ASCII = str.maketrans(
    {
        "ø": "o",
        "Ø": "O",
        "å": "a",
        "Å": "A",
        "æ": "ae",
        "Æ": "AE",
        "ä": "a",
        "Ä": "A",
        "ö": "o",
        "Ö": "O",
        "é": "e",
        "ü": "u",
    }
)

LONG_VALUE = ("Lang kommentar om kunden \u2013 æøå ÆØÅ, «sitat» og mer. " * 120)[:5000]
# Strings a naive loader breaks on (CSV/COPY quoting, NULL markers, encodings, sizes). Each hostile
# customer gets one variant in its lastname, address, city, internalNote and displayName.
HOSTILE_VALUES: list[str] = [
    "O'Brien \"Bobby\" D'Angelo",
    "Berg, Hansen; og Co, AS;",
    "Tab\tseparert\tnavn",
    "Første linje\nAndre linje\r\nTredje",
    "C:\\kunder\\ny \\ mappe\\",
    "\\N",
    "NULL",
    "Åse 😀🎉 Ølberg 👨‍👩‍👧‍👦",
    LONG_VALUE,
    "",
    '=HYPERLINK("http://x.example";"y"),+1;-2@',
    "Robert'); DROP TABLE customers;--",
]
EMPTY_VARIANT = HOSTILE_VALUES.index("")
LONG_VARIANT = HOSTILE_VALUES.index(LONG_VALUE)
HOSTILE_GROUP_NAMES = [
    "VIP \"Gull\", 'Platina'; \\N\tNULL\\",
    "Sommer 😀 2025\nNy linje, \\ NULL",
]
_GROUP_NAMES = [
    "VIP-kunder",
    "Kundeklubb Gull",
    "Kundeklubb Sølv",
    "Bedriftskunder",
    "Stamkunder Oslo",
    "Black Week",
    "Julekampanje",
    "Sommerkampanje",
    "Inaktive 12 mnd",
    "Nye kunder",
    "Storkunder B2B",
    "Ansatte",
    "Studentrabatt",
    "Medlemmer",
    "Kampanj Sverige",
    "Kunder Danmark",
    "Asiakkaat Suomi",
    "Bergen sentrum",
    "Trondheim og omegn",
    "Göteborg butik",
    "Nettbutikk aktive",
    "Gavekort-kjøpere",
    "Sportsklubber",
    "Borettslag",
    "Frisører",
    "Barnehager",
    "Restauranter",
    "Hytteeiere",
]
_SPECIAL_NAMES = ["Tom gruppe", "Én kunde", "Topp 100", "Nyhetsbrev \u2013 alle"]
# What real APIs send that the spec does not allow, one kind per customer (13, 14, ... of each
# tenant, right after the hostile strings' customers): a loader must keep these customers, not fail.
SPEC_DEVIATIONS: list[str] = [
    "nulls",  # email, mobile and credit null, as for a customer created without them
    "wrong_types",  # a string in integer, number and boolean fields, a number in a string field
    "unknown_enum",  # an address type the spec does not list
    "nul",  # U+0000 in firstname (text) and in ehf.address (jsonb)
    "missing",  # required email and credit absent
]
FIRST_DEVIANT = len(HOSTILE_VALUES) + 1
NUL_VARIANT = SPEC_DEVIATIONS.index("nul")


class CustomerCore(NamedTuple):
    """The cheap fields: enough to sort by and to decide the shape of the full record."""

    customer_type: str
    country: str
    firstname: str
    lastname: str
    created_ms: int
    hostile: int | None


def _uid_width(count: int, minimum: int) -> int:
    """Fixed width keeps string order equal to numeric order; it grows only past 10**minimum."""
    return max(minimum, len(str(count)))


class CustomerFactory:
    """Builds customer records of one tenant from (seed, tenant index, customer index), never storing them."""

    def __init__(
        self, seed: int, tenant_index: int, base_count: int, hostile: bool, spec_deviations: bool = False
    ) -> None:
        self.base_count = base_count
        self.hostile = hostile
        self.spec_deviations = spec_deviations
        self.width = _uid_width(base_count, 7)
        self._tenant_key = mix64(seed * 1_000_003 + tenant_index * 7919 + 17)

    def uid(self, index: int) -> str:
        """Fixed-width uid of a generated customer."""
        return f"{CUSTOMER_PREFIX}{index:0{self.width}d}"

    def parse(self, uid: str) -> int | None:
        """Index of a generated customer from its uid, or None when it is not one."""
        digits = uid[len(CUSTOMER_PREFIX) :]
        if len(digits) != self.width or not uid.startswith(CUSTOMER_PREFIX) or not digits.isdigit():
            return None
        if not digits.isascii():
            return None
        index = int(digits)
        return index if index < self.base_count else None

    def _hash(self, index: int, salt: int = 0) -> int:
        """Independent 64-bit values per (customer, salt), all derived from the tenant key."""
        return mix64(self._tenant_key ^ ((index * _GOLDEN + salt) & _MASK64))

    def hostile_variant(self, index: int) -> int | None:
        """Which hostile string a customer carries: customers 1..12 get one each, then every 997th."""
        if not self.hostile or index >= self.base_count:
            return None
        if 1 <= index <= len(HOSTILE_VALUES):
            return index - 1
        if index % 997 == 3 and index % UNGROUPED_EVERY != UNGROUPED_EVERY - 1:
            return (index // 997) % len(HOSTILE_VALUES)
        return None

    def deviation_variant(self, index: int) -> int | None:
        """Which way a customer breaks the spec (``SPEC_DEVIATIONS``): customers 13..17 only."""
        if not self.spec_deviations or index >= self.base_count:
            return None
        variant = index - FIRST_DEVIANT
        return variant if 0 <= variant < len(SPEC_DEVIATIONS) else None

    def hostile_indices(self) -> list[int]:
        """Every customer carrying a hostile string or breaking the spec; the group plan makes sure
        they are listed somewhere."""
        deviant = [
            i
            for i in range(FIRST_DEVIANT, FIRST_DEVIANT + len(SPEC_DEVIATIONS))
            if self.deviation_variant(i) is not None
        ]
        if not self.hostile:
            return deviant
        first = range(1, min(len(HOSTILE_VALUES), self.base_count - 1) + 1)
        spread = range(3, self.base_count, 997)
        return sorted({*deviant, *(i for i in (*first, *spread) if self.hostile_variant(i) is not None)})

    def _type_of(self, h: int) -> str:
        """PERSON 80 %, COMPANY 14 %, B2B 6 %."""
        roll = h % 100
        return "PERSON" if roll < 80 else ("COMPANY" if roll < 94 else "B2B")

    def _is_department(self, index: int, h: int) -> bool:
        """A quarter of the companies are departments of another company."""
        return index > 0 and self._type_of(h) == "COMPANY" and (h >> 40) % 4 == 0

    def core(self, index: int) -> CustomerCore:
        """Type, country, names and creation time from one hash: what sorting needs, nothing more."""
        h = self._hash(index)
        country = ("NO", "SE", "DK", "FI")[_bucket((h >> 8) % 100, (50, 75, 90))]
        firstname = _FIRST[country][(h >> 16) % len(_FIRST[country])]
        lastname = _LAST[country][(h >> 28) % len(_LAST[country])]
        created_ms = _CREATED_FROM + self._hash(index, 1) % _CREATED_SPAN
        hostile = self.hostile_variant(index)
        if hostile == EMPTY_VARIANT:
            firstname = lastname = ""
        elif hostile is not None and hostile != LONG_VARIANT:
            lastname = HOSTILE_VALUES[hostile]
        return CustomerCore(self._type_of(h), country, firstname, lastname, created_ms, hostile)

    def sort_value(self, index: int, field: str) -> str:
        """The generated value of a sortable customer field (createdAt as its RFC 3339 string)."""
        core = self.core(index)
        if field == "firstname":
            return _with_nul(core.firstname) if self.deviation_variant(index) == NUL_VARIANT else core.firstname
        if field == "lastname":
            return core.lastname
        return iso_from_ms(core.created_ms)

    def company_name(self, index: int, country: str) -> str:
        """A Nordic-sounding company name with the country's legal form."""
        h = self._hash(index, 2)
        word = _COMPANY_WORDS[h % len(_COMPANY_WORDS)]
        trade = _COMPANY_TRADES[(h >> 12) % len(_COMPANY_TRADES)]
        forms = _LEGAL_FORMS[country]
        return f"{word} {trade} {forms[(h >> 24) % len(forms)]}"

    def _parent_of(self, index: int) -> int | None:
        """A department points at the nearest earlier main company (never a department: no cycles)."""
        if not self._is_department(index, self._hash(index)):
            return None
        start = min(index, self.base_count) - 1
        for candidate in range(start, max(-1, start - 400), -1):
            h = self._hash(candidate)
            if self._type_of(h) == "COMPANY" and not self._is_department(candidate, h):
                return candidate
        return None

    def customer(self, index: int, uid: str | None = None) -> dict[str, Any]:
        """The full API record of a customer, without ``customerGroupUids`` (the state owns memberships).

        Every value is drawn from one random stream per customer, so the helpers below draw in a
        fixed order: changing that order changes every generated customer.
        """
        core = self.core(index)
        rng = FastRandom(self._hash(index, 3))
        parent = self._parent_of(index)
        contact = self._contact(index, core, parent, rng)
        record = self._record(index, uid, core, parent, contact, rng)
        _add_optional_parts(record, index, core, contact, rng)
        if core.hostile is not None:
            _apply_hostile(record, core.hostile)
        deviation = self.deviation_variant(index)
        if deviation is not None:
            _break_spec(record, SPEC_DEVIATIONS[deviation])
        return record

    def _contact(self, index: int, core: CustomerCore, parent: int | None, rng: FastRandom) -> _Contact:
        """Postal address, company name, organisation number, modification time, e-mail and mobile."""
        country = core.country
        is_company = core.customer_type != "PERSON"
        city, low, high = rng.choice(_CITIES[country])
        postal = _postal_code(country, rng.randint(low, high))
        street = f"{rng.choice(_STREETS[country])} {rng.randint(1, 140)}{rng.choice(['', '', '', 'A', 'B'])}"
        company = ""
        if is_company:
            company = self.company_name(parent if parent is not None else index, country)
            if parent is not None:
                company = f"{company} \u2013 {rng.choice(_DEPARTMENTS)}"
        orgnr = f"{rng.randint(810_000_000, 999_999_999)}"
        modified_ms = core.created_ms + rng.randrange(max(1, _MODIFIED_UNTIL - core.created_ms))
        email = _email(core, company, rng)
        mobile = "" if rng.random() < 0.05 else _mobile(country, rng)
        return _Contact(street, postal, city, company, orgnr, modified_ms, email, mobile)

    def _record(
        self, index: int, uid: str | None, core: CustomerCore, parent: int | None, contact: _Contact, rng: FastRandom
    ) -> dict[str, Any]:
        """The record's fields; the optional parts (EHF, store, addresses, contacts) come after."""
        is_company = core.customer_type != "PERSON"
        return {
            "customerUid": uid if uid is not None else self.uid(index),
            "customerType": core.customer_type,
            "customerParentUid": self.uid(parent) if parent is not None else "",
            "firstname": core.firstname,
            "lastname": core.lastname,
            "displayName": contact.company if is_company else f"{core.firstname} {core.lastname}".strip(),
            "companyName": contact.company,
            "address": contact.street,
            "postalCode": contact.postal,
            "city": contact.city,
            "countryCode": core.country,
            "email": contact.email,
            "mobile": contact.mobile,
            "externalId": str(100_000 + index) if rng.random() < 0.7 else "",
            "origin": rng.choice(_ORIGINS),
            "createdAt": iso_from_ms(core.created_ms),
            "lastModifiedAt": iso_from_ms(contact.modified_ms),
            "pricelistUid": rng.choice(_PRICELISTS_COMPANY)
            if is_company
            else ("pl-member" if rng.random() < 0.1 else ""),
            "vatNumber": _vat_number(core.country, contact.orgnr) if is_company else "",
            "loyaltyId": f"70{rng.randint(0, 10**11 - 1):011d}" if not is_company and rng.random() < 0.55 else "",
            "internalNote": rng.choice(_NOTES) if rng.random() < 0.15 else "",
            "paymentTerms": _payment_terms(core.customer_type, rng),
            "credit": _credit(is_company, rng),
            "accountManager": _account_manager(is_company, rng),
            "ehf": {"enabled": False, "address": ""},
            "ehfEnabled": False,
            "defaultStore": None,
            "relevance": round(rng.random() * 100, 3),
            "addresses": [],
            "contacts": [],
            "extensions": [],
            "consents": _consents(index, core.created_ms, rng),
            "customerGroupUids": [],
        }


class _Contact(NamedTuple):
    """The drawn values a customer record shares with its addresses and contacts."""

    street: str
    postal: str
    city: str
    company: str
    orgnr: str
    modified_ms: int
    email: str
    mobile: str


def _email(core: CustomerCore, company: str, rng: FastRandom) -> str:
    """A company's shared mailbox at its own domain, or a person's address; 7 % have none."""
    if core.customer_type != "PERSON":
        domain = company.split(" ")[0].lower().translate(_ASCII) + "." + core.country.lower()
        email = f"{rng.choice(['post', 'faktura', 'innkjop', 'kontakt'])}@{domain}"
    else:
        local = _email_local(core.firstname, core.lastname)
        email = f"{local}{rng.randint(1, 999) if rng.random() < 0.5 else ''}@{rng.choice(_EMAIL_DOMAINS[core.country])}"
    return "" if rng.random() < 0.07 else email


def _payment_terms(customer_type: str, rng: FastRandom) -> int:
    """Days to pay: companies mostly 30, B2B customers 14 or 30; persons have none (0)."""
    if customer_type == "PERSON":
        return 0
    return rng.choice([10, 14, 30, 30, 30, 45, 60]) if customer_type == "COMPANY" else rng.choice([14, 30])


def _add_optional_parts(
    record: dict[str, Any], index: int, core: CustomerCore, contact: _Contact, rng: FastRandom
) -> None:
    """EHF invoicing (Norwegian companies), a default store, addresses, and a company's contacts and extensions."""
    is_company = core.customer_type != "PERSON"
    if is_company and core.country == "NO" and rng.random() < 0.5:
        record["ehf"] = {"enabled": True, "address": f"0192:{contact.orgnr}"}
        record["ehfEnabled"] = True
    if rng.random() < 0.6:
        store_uid, store_name = rng.choice(_STORES)
        record["defaultStore"] = {"storeUid": store_uid, "name": store_name}
    record["addresses"] = _addresses(index, core, contact, rng)
    if is_company:
        record["contacts"] = _contacts(index, core.country, core.created_ms, contact.modified_ms, contact.orgnr, rng)
        if rng.random() < 0.15:
            record["extensions"] = [{"extensionCode": "TWO_INVOICE", "organizationUid": f"org-{contact.orgnr}"}]


def _addresses(index: int, core: CustomerCore, contact: _Contact, rng: FastRandom) -> list[dict[str, Any]]:
    """None, a delivery address, or a delivery and an invoice address."""
    addresses = []
    for number in range(rng.choice([0, 0, 1, 1, 2])):
        kind = "DELIVERY_ADDRESS" if number == 0 else "INVOICE_ADDRESS"
        a_city, a_low, a_high = rng.choice(_CITIES[core.country])
        addresses.append(
            {
                "customerAddressUid": f"adr-{index}-{number + 1}",
                "type": kind,
                "displayName": "Levering" if kind == "DELIVERY_ADDRESS" else "Faktura",
                "firstname": core.firstname,
                "lastname": core.lastname,
                "companyName": contact.company,
                "address": f"{rng.choice(_STREETS[core.country])} {rng.randint(1, 90)}",
                "postalCode": _postal_code(core.country, rng.randint(a_low, a_high)),
                "city": a_city,
                "countryCode": core.country,
                "email": contact.email,
                "phone": contact.mobile,
            }
        )
    return addresses


@functools.lru_cache(maxsize=4096)
def _email_local(first: str, last: str) -> str:
    """Name pairs repeat, so the ASCII-folded e-mail local part is cached."""
    local = f"{first}.{last}".lower().translate(_ASCII)
    return "".join(ch for ch in local if ch.isascii() and (ch.isalnum() or ch == ".")).strip(".") or "kunde"


def _bucket(roll: int, bounds: tuple[int, ...]) -> int:
    """Index of the first bound above ``roll``: turns a percentage into a weighted choice."""
    for position, bound in enumerate(bounds):
        if roll < bound:
            return position
    return len(bounds)


def _postal_code(country: str, number: int) -> str:
    """Each country writes postal codes its own way (SE has a space, FI five digits)."""
    if country == "SE":
        text = f"{number:05d}"
        return f"{text[:3]} {text[3:]}"
    if country == "FI":
        return f"{number:05d}"
    return f"{number:04d}"


def _mobile(country: str, rng: FastRandom) -> str:
    """A mobile number with the country's dialling code, sometimes written with spaces."""
    if country == "NO":
        number = f"+47{rng.choice('49')}{rng.randint(0, 9_999_999):07d}"
    elif country == "SE":
        number = f"+467{rng.choice('02369')}{rng.randint(0, 9_999_999):07d}"
    elif country == "DK":
        number = f"+45{rng.choice(['20', '22', '26', '28', '30', '31', '40', '42', '51', '53', '60', '61'])}"
        number += f"{rng.randint(0, 999_999):06d}"
    else:
        number = f"+358{rng.choice(['40', '41', '44', '45', '50'])}{rng.randint(0, 9_999_999):07d}"
    if rng.random() < 0.1:
        code = _DIALLING_CODES[country]
        national = number[len(code) :]
        return f"{code} {national[:3]} {national[3:5]} {national[5:]}"
    return number


def _vat_number(country: str, orgnr: str) -> str:
    """VAT numbers in each country's format, derived from the organisation number."""
    if country == "NO":
        return f"NO{orgnr}MVA"
    if country == "SE":
        return f"SE{orgnr}{orgnr[-1]}01"
    return f"{country}{orgnr[:8]}"


def _credit(is_company: bool, rng: FastRandom) -> dict[str, int]:
    """Persons mostly have no credit; many companies do, some using more than 80 % of it."""
    if not is_company:
        if rng.random() < 0.03:
            return {"limit": 5000, "balance": rng.randint(0, 5000)}
        return {"limit": 0, "balance": 0}
    if rng.random() < 0.25:
        return {"limit": 0, "balance": 0}
    limit = rng.choice([10_000, 25_000, 50_000, 100_000, 250_000, 500_000])
    roll = rng.random()
    if roll < 0.3:
        balance = 0
    elif roll < 0.7:
        balance = rng.randint(0, limit * 8 // 10)
    else:
        balance = rng.randint(limit * 8 // 10 + 1, limit * 115 // 100)
    return {"limit": limit, "balance": balance}


def _account_manager(is_company: bool, rng: FastRandom) -> dict[str, str]:
    """Companies mostly have an account manager; persons get the empty one."""
    if is_company and rng.random() < 0.8:
        user_uid, name, code = rng.choice(_ACCOUNT_MANAGERS)
        return {"tenantUserUid": user_uid, "displayName": name, "userCode": code}
    return {"tenantUserUid": "", "displayName": "", "userCode": ""}


def _consents(index: int, created_ms: int, rng: FastRandom) -> list[dict[str, Any]]:
    """Consent history: several entries per consent name when the customer changed their mind."""
    entries: list[dict[str, Any]] = []
    for name, probability in _CONSENTS:
        if rng.random() >= probability:
            continue
        when = created_ms + rng.randrange(86_400_000 * 30)
        status = rng.random() < 0.85
        for _change in range(rng.choice([1, 1, 1, 2, 3])):
            entries.append(
                {
                    "consentUid": f"cns-{index}-{len(entries) + 1}",
                    "name": name,
                    "status": status,
                    "source": rng.choice(_CONSENT_SOURCES),
                    "createdAt": iso_from_ms(min(when, _MODIFIED_UNTIL)),
                }
            )
            status = not status
            when += rng.randrange(86_400_000, 86_400_000 * 400)
    return entries


def _contacts(
    index: int, country: str, created_ms: int, modified_ms: int, orgnr: str, rng: FastRandom
) -> list[dict[str, Any]]:
    """Contact persons of a company, sometimes with a TWO_INVOICE extension."""
    contacts: list[dict[str, Any]] = []
    for number in range(rng.choice([0, 1, 1, 2, 3])):
        first = rng.choice(_FIRST[country])
        last = rng.choice(_LAST[country])
        local = f"{first}.{last}".lower().translate(_ASCII)
        contacts.append(
            {
                "customerContactUid": f"con-{index}-{number + 1}",
                "firstname": first,
                "lastname": last,
                "displayName": f"{first} {last}",
                "email": f"{local}@firma.{country.lower()}",
                "mobile": _mobile(country, rng),
                "role": rng.choice(_CONTACT_ROLES),
                "createdAt": iso_from_ms(created_ms),
                "lastModifiedAt": iso_from_ms(modified_ms),
                "extensions": [{"extensionCode": "TWO_INVOICE", "organizationUid": f"org-{orgnr}"}]
                if rng.random() < 0.1
                else [],
            }
        )
    return contacts


def _apply_hostile(record: dict[str, Any], variant: int) -> None:
    """Put one hostile string in the fields a loader is most likely to mishandle."""
    value = HOSTILE_VALUES[variant]
    if variant == EMPTY_VARIANT:
        for key in (
            "firstname",
            "lastname",
            "displayName",
            "companyName",
            "address",
            "postalCode",
            "city",
            "email",
            "mobile",
            "externalId",
            "origin",
            "internalNote",
        ):
            record[key] = ""
        return
    if variant == LONG_VARIANT:
        record["internalNote"] = value
        record["address"] = value
        return
    for key in ("lastname", "address", "city", "internalNote", "displayName"):
        record[key] = value
    if record["companyName"]:
        record["companyName"] = value


def _with_nul(name: str) -> str:
    """The name with U+0000 after its second character, as a broken import might leave it."""
    return name[:2] + "\x00" + name[2:]


def _break_spec(record: dict[str, Any], kind: str) -> None:
    """Break the spec the way ``kind`` of ``SPEC_DEVIATIONS`` says (``sort_value`` knows firstname's NUL)."""
    if kind == "nulls":
        record.update(email=None, mobile=None, credit=None)
    elif kind == "wrong_types":
        digits = "".join(ch for ch in record["postalCode"] if ch.isdigit()) or "0"
        record.update(paymentTerms="30 dager", relevance="high", ehfEnabled="yes", postalCode=int(digits))
    elif kind == "unknown_enum":
        record["addresses"] = [
            {
                "customerAddressUid": f"adr-{record['customerUid']}-pickup",
                "type": "PICKUP_POINT",
                "displayName": "Hentested",
                "firstname": record["firstname"],
                "lastname": record["lastname"],
                "companyName": record["companyName"],
                "address": record["address"],
                "postalCode": record["postalCode"],
                "city": record["city"],
                "countryCode": record["countryCode"],
                "email": record["email"],
                "phone": record["mobile"],
            }
        ]
    elif kind == "nul":
        record.update(firstname=_with_nul(record["firstname"]), ehf={"enabled": False, "address": "\x00"})
    elif kind == "missing":
        del record["email"], record["credit"]


@dataclass
class GroupPlan:
    """One generated group: metadata and its members as sorted customer indices."""

    uid: str
    name: str
    created_ms: int
    created_by: str
    modified_ms: int
    modified_by: str
    members: list[int]


def group_uid(index: int, groups: int) -> str:
    """Fixed-width uid of a generated group (``grp-0001``)."""
    return f"{GROUP_PREFIX}{index + 1:0{_uid_width(groups, 4)}d}"


def _group_sizes(customers: int, groups: int, rng: random.Random) -> list[int]:
    """Sizes in uid order: empty, 1, 100, thousands, then an uneven (Zipf-like) spread of the rest."""
    eligible = customers - customers // UNGROUPED_EVERY
    specials = [0, min(1, eligible), min(100, eligible), min(eligible * 3 // 4, BIG_GROUP_SIZE)][:groups]
    rest = groups - len(specials)
    if rest <= 0:
        return specials
    target = max(0, round(MEMBERSHIPS_PER_CUSTOMER * customers) - sum(specials))
    weights = [rng.uniform(0.6, 1.4) / (rank + 1) ** 0.8 for rank in range(rest)]
    total_weight = sum(weights)
    cap = max(1, eligible * 6 // 10)
    sizes = [min(cap, eligible, max(2, round(target * w / total_weight))) for w in weights]
    rng.shuffle(sizes)
    return specials + sizes


def plan_groups(
    seed: int, tenant_index: int, customers: int, groups: int, hostile_customers: list[int], hostile_names: bool
) -> list[GroupPlan]:
    """The groups of one tenant and their members, deterministic for (seed, tenant index)."""
    rng = random.Random(mix64(seed * 31 + tenant_index * 1_000_033 + 5))
    eligible = customers - customers // UNGROUPED_EVERY
    sizes = _group_sizes(customers, groups, rng)
    step = UNGROUPED_EVERY - 1
    plans: list[GroupPlan] = []
    for index, size in enumerate(sizes):
        positions = rng.sample(range(eligible), size) if size else []
        members = sorted(p + p // step for p in positions)
        if index == SPECIAL_GROUPS - 1 and hostile_customers:
            members = sorted(set(members).union(hostile_customers))
        if index < SPECIAL_GROUPS:
            name = _SPECIAL_NAMES[index]
        elif hostile_names and index - SPECIAL_GROUPS < len(HOSTILE_GROUP_NAMES):
            name = HOSTILE_GROUP_NAMES[index - SPECIAL_GROUPS]
        else:
            base = _GROUP_NAMES[(index - SPECIAL_GROUPS) % len(_GROUP_NAMES)]
            cycle = (index - SPECIAL_GROUPS) // len(_GROUP_NAMES)
            name = base if cycle == 0 else f"{base} {cycle + 1}"
        created = _CREATED_FROM + rng.randrange(_CREATED_SPAN)
        modified = created + rng.randrange(max(1, _MODIFIED_UNTIL - created))
        plans.append(
            GroupPlan(
                uid=group_uid(index, groups),
                name=name,
                created_ms=created,
                created_by=rng.choice(_STAFF),
                modified_ms=modified,
                modified_by=rng.choice(_STAFF),
                members=members,
            )
        )
    return plans
