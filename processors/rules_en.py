"""Offline rules for English sentences (pure): the user's words in the third person ("I'm" -> "The user is"),
requests, choices, preferences and courtesy; ``processors.rules`` extracts with them (Chinese: ``rules_zh``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["INTERJECTION", "is_filler", "key_words", "preference", "pronouns", "third_person"]

_FILLER = re.compile(
    r"^(?:(?:ok(?:ay)?|sure|great|cool|noted|got it|understood|alright|all right|perfect|of course|"
    r"(?:that )?sounds (?:good|great|perfect|like a plan)|(?:that's a |what a )?(?:good|great|nice) idea|"
    r"(?:that )?makes sense|nice|(?:that's|that is) (?:great|helpful|perfect|good|fine)|"
    r"(?:(?:that's|that is|what) an? )?(?:great|good|nice|excellent|awesome|fair) (?:goal|question|choice|plan|point)|"
    r"(?:hey|hi|hello|howdy)(?: there)?(?: [A-Z]\w*)?|"
    r"(?:(?:yeah|yes|yep|oh|wow|aw+|ha(?:ha)+)[\s!,.]+)?(?:definitely|absolutely|totally|for sure|exactly|indeed|"
    r"same here|me too|me neither|(?:I )?can't wait|sorry to hear (?:that|about that)|(?:that's|that is|this is) "
    r"(?:so |really )?(?:cool|awesome|amazing|great|nice|wonderful|fantastic|sweet|too bad)|"
    r"(?:that|it) must(?:'ve| have) been (?:so |really )?\w+|how (?:cool|awesome|nice|fun|exciting)|"
    r"congrat(?:s|ulations)(?: [A-Z]\w*)?|good luck(?: [A-Z]\w*)?|wow|haha+|lol))[\s!.,]*$"
    r"|(?:thanks?|thank you|you're welcome|glad|no problem|feel free|happy to help|let me know|"
    r"(?:it's )?(?:nice|good|great) to (?:meet|see|hear from) you)\b)",
    re.I,
)
"""Courtesy: a sentence that is only "Okay.", "Great!", a greeting ("Hey Gina!") or a reaction ("Yeah
definitely!", "Sorry to hear that!", "That must've been great!"), or opens with thanks or an offer of more help
("Feel free to ask ..."). "Great Wall tickets are booked" is not."""
INTERJECTION = re.compile(
    r"^(?:(?:ok(?:ay)?|sure|thanks?(?: a lot| so much)?|thank you(?: so much)?|great|cool|alright|all right|yes|"
    r"yeah|yep|no problem|of course|got it|perfect|awesome|wow|oh|hi|hello|hey)\s*[,!.:;\u2026\u2013\u2014-]+\s*)+",
    re.I,
)
"""Interjections set off by punctuation before what a sentence says ("Sure, I booked ...", "Thanks, I'm ...")."""


def is_filler(text: str) -> bool:
    """Whether ``text`` says nothing beyond courtesy: "Okay, feel free to ask" is filler, "Sure, I booked a table
    at Luigi" is not (the interjection is passed over before the filler test)."""
    rest = INTERJECTION.sub("", text.replace("\u2019", "'"), count=1)
    return not rest.strip() or _FILLER.match(rest) is not None


@dataclass(frozen=True, slots=True)
class _Pref:
    pattern: re.Pattern[str]
    verb: str
    polarity: str


_TASKS = "use|write|add|include|suggest|recommend|call|give|send|mention|make|book|schedule|remind|put|show"
"""What a standing instruction tells the assistant to do, or never to do ("Don't use pandas")."""
_PREFS = (
    _Pref(re.compile(rf"^(?:please\s+)?(?:don't|do not|never)\s+(?P<obj>(?:{_TASKS})\b.+)", re.I),
          "does not want the assistant to", "negative"),
    _Pref(re.compile(rf"^(?:please\s+)?always\s+(?P<obj>(?:{_TASKS}|answer|reply|respond|explain|ask|check)\b.+)",
                     re.I),
          "wants the assistant to always", "positive"),
    _Pref(re.compile(r"\bmy (?:favou?rite|fave) (?P<what>[\w -]{1,30}?) (?:is|are)\s+(?P<obj>.+)", re.I),
          "'s favorite {what} is", "positive"),
    _Pref(re.compile(r"\bI(?:'m| am) (?:an? )?(?:strict )?(?P<obj>vegetarian|vegan|pescatarian|gluten[- ]free|"
                     r"lactose[- ]intolerant|teetotal|kosher|halal|allergic to .+)", re.I), "is", "positive"),
    _Pref(re.compile(r"\bI (?:can't|cannot|don't|do not|never) (?P<v>eat|drink)\s+(?P<obj>.+)", re.I),
          "does not {v}", "negative"),
    _Pref(re.compile(r"\bI(?:'m| am) not (?:an? (?:big |huge )?fan of|into|keen on|big on)\s+(?P<obj>.+)", re.I),
          "does not like", "negative"),
    _Pref(re.compile(r"^(?:no|without)\s+(?P<obj>[\w -]{2,40}?),?\s+(?:please|for me)\b", re.I),
          "does not want", "negative"),
    _Pref(
        re.compile(r"\bI (?:do not|don't|never) (?:really )?(like|enjoy|love)\s+(?P<obj>.+)", re.I),
        "does not like",
        "negative",
    ),
    _Pref(re.compile(r"\bI (?:do not|don't) want\s+(?P<obj>.+)", re.I), "does not want", "negative"),
    _Pref(
        re.compile(r"\bI (?:really |also )?(?:hate|dislike|can't stand|cannot stand)\s+(?P<obj>.+)", re.I),
        "dislikes",
        "negative",
    ),
    _Pref(
        re.compile(r"\bI(?:'d| would)? (?:really |also |much )?prefer\s+(?P<obj>.+)", re.I),
        "prefers",
        "positive",
    ),
    _Pref(
        re.compile(
            r"\b(?:I(?:'ll| will|'m going to| am going to)|we(?:'ll| will|'re going to| are going to)|let's|let us) "
            r"(?:choose|pick|go with|take|book)\s+(?P<obj>.+)", re.I
        ),
        "will choose",
        "positive",
    ),
    _Pref(re.compile(r"\b(?:I|we) (?:choose|chose|pick|picked|went with)\s+(?P<obj>.+)", re.I), "chooses",
          "positive"),
    _Pref(re.compile(r"\bI(?:'d| would) (?:much )?rather\s+(?P<obj>.+)", re.I), "would rather", "positive"),
    _Pref(re.compile(r"\bI (?:always|usually) (?:want|ask for|book|order)\s+(?P<obj>.+)", re.I), "usually wants",
          "positive"),
    _Pref(re.compile(r"\bI(?:'m| am) (?:an? (?:big |huge )?fan of|really into|into|keen on)\s+(?P<obj>.+)", re.I),
          "likes", "positive"),
    _Pref(re.compile(r"\bI (?:really |also |do )?love\s+(?P<obj>.+)", re.I), "loves", "positive"),
    _Pref(re.compile(r"\bI (?:really |also |do )?(?:like|enjoy)\s+(?P<obj>.+)", re.I), "likes", "positive"),
)

_LEAD = (
    (re.compile(r"^I(?:'ve| have)? planned to\b", re.I), "The user plans to"),
    (re.compile(r"^I(?:'m| am) planning to\b", re.I), "The user plans to"),
    (re.compile(r"^I(?:'m| am)\b", re.I), "The user is"),
    (re.compile(r"^I was\b", re.I), "The user was"),
    (re.compile(r"^I(?:'ve| have)\b", re.I), "The user has"),
    (re.compile(r"^I(?:'ll| will)\b", re.I), "The user will"),
    (re.compile(r"^I(?:'d| would)\b", re.I), "The user would"),
    (re.compile(r"^I (?:don't|do not)\b", re.I), "The user does not"),
    (re.compile(r"^I (?:didn't|did not)\b", re.I), "The user did not"),
    (re.compile(r"^I (?:can't|cannot)\b", re.I), "The user cannot"),
    (re.compile(r"^I (can|could|should|must|might|may|had|did|need to|want to)\b", re.I), r"The user \1"),
)
_ASK = re.compile(r"^(?:please\s+|(?:can|could|would|will) you (?:please\s+)?)(?P<rest>.+)", re.I)
_WORDS = (
    (re.compile(r"\bmy\b", re.I), "the user's"),
    (re.compile(r"\bmine\b", re.I), "the user's"),
    (re.compile(r"\bmyself\b", re.I), "the user"),
    (re.compile(r"\bme\b", re.I), "the user"),
    (re.compile(r"\byour\b", re.I), "the assistant's"),
    (re.compile(r"\byou\b", re.I), "the assistant"),
)


_DISCOURSE = re.compile(
    r"^(?:actually|btw|by the way|also|anyway|fyi|just so you know|for the record|remember that|note that|"
    r"oh and|and|so|(?:quick|one more|another) (?:one|thing|question|update|note)|update|note|p\.?s\.?)[,:]?\s+"
    r"(?=(?:I|my)\b)",
    re.I,
)
"""Words that lead into what the user says about itself ("Actually, I live in Paris now")."""
_MY_ATTRIBUTE = re.compile(
    r"^my (?P<what>(?:first |last |full |nick)?name|e-?mail(?: address)?|(?:phone|mobile|cell)(?: number)?|"
    r"birthday|date of birth|(?:home )?address|age|job(?: title)?|(?:wifi |wi-fi )?password|"
    r"favou?rite \w+(?: \w+)?) (?P<verb>is|are) (?P<value>.+)$",
    re.I,
)
"""An attribute with one value at a time: "My name is Anna" is superseded by "My name is Annie"."""


def third_person(sentence: str) -> tuple[str, str]:
    """``sentence`` (a user's words) in the third person, and a short key naming what it is about."""
    text = _DISCOURSE.sub("", sentence.strip().replace("’", "'").replace("‘", "'"), count=1)
    if _subjectless(text):  # "Lost my job yesterday" is the user's "I lost my job yesterday"
        text = "I " + text[0].lower() + text[1:]
    attribute = _MY_ATTRIBUTE.match(text)
    if attribute:
        what = attribute.group("what").lower().replace("favourite", "favorite")
        verb = attribute.group("verb").lower()
        return _finish(f"The user's {what} {verb} {pronouns(attribute.group('value'))}"), f"{what} {verb}"
    asked = _ASK.match(text)
    if asked:
        rest = pronouns(asked.group("rest").rstrip("?.! "))
        return f"The user asked the assistant to {rest}.", "request: " + key_words(rest)
    for pattern, repl in _LEAD:
        if pattern.search(text):
            body = _strip_subject(pattern.sub(repl, text, count=1))
            return _finish("The user " + pronouns(body)), key_words(body)
    verb = re.match(r"^I\s+(?=\w)(.*)$", text, re.S)
    if verb:
        body = "The user " + pronouns(_predicate(verb.group(1), bool(_PAST_CONTEXT.search(text))))
        return _finish(body), _home(key_words(_strip_subject(body)))
    if text.endswith("?"):
        return f"The user asked: {pronouns(text)}", "question: " + key_words(text)
    if re.match(r"my\s+\w", text, re.I):  # "My sister lives in Boston": the user's sister, no "The user said:"
        return _finish("The user's " + pronouns(text[2:].lstrip())), "statement: " + key_words(text)
    return f"The user said: {_finish(pronouns(text))}", "statement: " + key_words(text)


_MOVED = re.compile(r"^(?:(?:just|finally|recently|now) )?(?:moved|relocated|moves|is moving|is relocating) to$")


def _home(key: str) -> str:
    """"moved to Paris" is where the user lives now: keyed as "lives in", so it supersedes "lives in Berlin"."""
    return "lives in" if _MOVED.match(key) else key


def _subjectless(text: str) -> bool:
    """Whether ``text`` opens with a verb in the past and no subject ("Went hiking", "Just bought a car"): a
    word lemminflect knows only as a verb, in a past form ("Used cars are cheap" and "Left is right" stay)."""
    first = re.match(r"(?:(?:just|finally|recently|already|also)\s+)?([A-Za-z]+)\b", text, re.I)
    if first is None or not text[:1].isupper():
        return False
    word = first.group(1).lower()
    from lemminflect import getAllLemmas, getInflection

    lemmas = getAllLemmas(word)
    verbs = lemmas.get("VERB", ())
    only_verb = bool(verbs) and set(lemmas) <= {"VERB", "AUX"} and word not in verbs
    return only_verb and any(word in getInflection(lemma, "VBD") for lemma in verbs)


def _finish(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if text[-1:] in ".!?。！？…" else text + "."


def pronouns(text: str) -> str:
    for pattern, repl in _WORDS:
        text = pattern.sub(repl, text)
    past = bool(_PAST_CONTEXT.search(text))
    return _INNER_I.sub(lambda match: _inner_i(match, past), text)


_CONTRACTIONS = {"m": "is", "ve": "has", "ll": "will", "d": "would"}
_ADVERBS = ("also|really|never|always|just|still|often|usually|sometimes|actually|finally|recently|already|even|"
            "only|totally|definitely|probably|rarely|seldom|mostly|normally|generally|barely|hardly|truly|honestly|"
            "currently|now|soon|then|absolutely|personally|especially|sort of|kind of")
_LEAD_ADVERBS = re.compile(rf"^((?:(?:{_ADVERBS})\s+){{1,3}})(?=\w)", re.I)
_INNER_I = re.compile(rf"(?<![\w'])I(?:'(?P<c>m|ve|ll|d)\b|\s+(?P<v>(?:(?:{_ADVERBS})\s+){{0,3}}[A-Za-z']+)\b|(?=\W|$))")
_AS_GIVEN = {"can", "could", "will", "would", "should", "shall", "must", "might", "may", "ought", "cannot", "and", "or"}
_SPECIAL = {"wanna": "wants to", "gonna": "is going to", "gotta": "has to", "am": "is", "be": "is", "have": "has",
            "do": "does", "go": "goes", "dont": "does not", "don't": "does not", "doesnt": "does not", "cant": "cannot", "can't": "cannot", "didnt": "did not",
            "didn't": "did not", "wont": "will not", "won't": "will not", "havent": "has not", "haven't": "has not",
            "wasnt": "was not", "wasn't": "was not", "im": "is", "ive": "has"}
_PAST_CONTEXT = re.compile(r"\b(?:yesterday|ago|last|earlier|once|when|(?:19|20)\d\d)\b", re.I)
"""Words that put a sentence in the past: "I read it yesterday" keeps "read", "I read novels" gets "reads"."""


def _inner_i(match: re.Match[str], past: bool) -> str:
    """ "I" inside a sentence as "the user", with the verb that follows in the third person."""
    if match.group("c"):
        return f"the user {_CONTRACTIONS[match.group('c').lower()]}"
    verb = match.group("v")
    return "the user" if verb is None else f"the user {_predicate(verb, past)}"


def _predicate(words: str, past: bool) -> str:
    """The words after "I" in the third person: adverbs kept, the verb conjugated ("never smoke" -> "never
    smokes", "swam" -> "swam", "read" -> "reads" unless ``past``)."""
    lead = _LEAD_ADVERBS.match(words)
    adverbs = lead.group(1) if lead else ""
    rest = words[len(adverbs):]
    verb = re.match(r"[A-Za-z']+", rest)
    if verb is None:
        return words
    return adverbs + _conjugate(verb.group(0), past) + rest[verb.end():]


def _conjugate(verb: str, past: bool = False) -> str:
    """One verb after "I" in the third person, by lemminflect's English lexicon: past forms kept ("swam",
    "felt"), modals kept, present forms inflected ("study" -> "studies"); a word it does not know gets the
    regular ending, a word it knows only as another part of speech ("I and my wife") stays."""
    lowered = verb.lower()
    if lowered in _SPECIAL:
        return _SPECIAL[lowered]
    if lowered in _AS_GIVEN:
        return verb
    from lemminflect import getAllLemmas, getInflection

    known = getAllLemmas(lowered)
    lemmas = known.get("VERB", ())
    if not known:
        return _regular(verb)
    if lowered not in lemmas:
        return verb  # an inflected form (swam, moved, left) or not a verb at all
    if any(lowered in getInflection(lemma, "VBD") for lemma in lemmas if lemma != lowered):
        return verb  # "saw" is also the verb "to saw": as a past of "see" it stays
    if past and lowered in getInflection(lowered, "VBD"):
        return verb  # read, put, quit: the same in the past
    third = getInflection(lowered, "VBZ")
    return third[0] if third else _regular(verb)


def _regular(verb: str) -> str:
    lowered = verb.lower()
    if lowered.endswith("ed"):
        return verb
    if re.search(r"[^aeiou]y$", lowered):
        return verb[:-1] + "ies"
    if re.search(r"(s|sh|ch|x|z|o)$", lowered):
        return verb + "es"
    return verb + "s"


def _strip_subject(text: str) -> str:
    return re.sub(r"^The user\s+", "", text)


def key_words(text: str, limit: int = 4) -> str:
    """The predicate without its object: words up to the first name or number, at most ``limit``."""
    out: list[str] = []
    for word in re.findall(r"[\w'-]+", text):
        if out and (word[:1].isupper() or word[:1].isdigit()):
            break
        out.append(word.lower())
        if len(out) >= limit:
            break
    return " ".join(out)


_AFTERWORDS = re.compile(r"(?:\s+(?:any ?more|now|these days|nowadays|lately|either|too|as well|at all|"
                         r"anyway|a lot|very much|so much))+$", re.I)


_PRONOUNS = frozenset({"it", "this", "that", "them", "him", "her", "these", "those", "it all", "that one"})


def preference(sentence: str) -> tuple[str, str, str] | None:
    text = sentence.replace("’", "'")
    for pref in _PREFS:
        match = pref.pattern.search(text)
        if match:
            obj = re.split(r"[,;]| because | but ", match.group("obj"), maxsplit=1)[0].strip().rstrip(".!?")
            obj = _AFTERWORDS.sub("", obj)  # "sushi anymore" is what "sushi" was: one preference, one key
            if obj.lower() in _PRONOUNS:  # "I love it" names nothing to prefer
                return None
            if obj:
                return pref.verb.format(**{k: v.lower() for k, v in match.groupdict().items() if v}), obj, pref.polarity
    return None
