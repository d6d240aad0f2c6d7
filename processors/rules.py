"""Offline rule-based extractor (no LLM): third-person user facts, explicit preferences, assistant statements.

Every memory it makes says so: ``extractor="rules"`` and ``metadata["extractor"] == "rules"``, and
its usage names the ``rules`` pseudo-model, so nobody mistakes it for LLM output.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import date

from processors.chunking import Window, count_tokens, render_line
from processors.fast import FastSettings, MemoryDraft, memory_parts
from processors.reader import Item
from processors.rules_en import INTERJECTION, key_words, preference, pronouns
from processors.rules_en import is_filler as is_filler_en
from processors.rules_en import third_person as third_person_en
from processors.rules_zh import (
    answer_zh,
    asked_zh,
    assistant_zh,
    is_chinese,
    is_filler_zh,
    preference_zh,
    pronouns_zh,
    strip_interjection_zh,
    third_person_zh,
)
from processors.timeparse import MONTHS as _MONTHS
from processors.timeparse import Span, parse_chat_time, relative_spans
from schemas.events import JsonDict, MemoryType, ModelUsage, SourceRef

__all__ = ["RULES_MODEL", "extract_rules", "parse_chat_time", "resolve_relative_times", "third_person"]

logger = logging.getLogger(__name__)

RULES_MODEL = "rules/v1"
"""Pseudo model id recorded in the usage of every rule-based memory."""

_SENTENCE = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*|\n+")
_MARKER = re.compile(r"\[(?:file|image|audio)(?::[^\]\n]*)?\]")
_CLAUSE = re.compile(r"(?:,|;|,? and)\s+(?=I\b|(?:also |really )?(?:prefer|like|love|hate|enjoy|dislike)\b)"
                     r"|[，；](?=我(?!们))")
_BARE_LIKING = re.compile(r"^(?:also |really )?(?:prefer|like|love|hate|enjoy|dislike)\b")
"""A clause that took its "I" from the one before ("I use Python and prefer type hints")."""
def _fmt(day: date, zh: bool = False) -> str:
    return f"{day.year}年{day.month}月{day.day}日" if zh else f"{day.day} {_MONTHS[day.month - 1].capitalize()} {day.year}"


def _span_words(span: Span, zh: bool = False) -> str:
    """The days of ``span`` in words ("8 May 2023", "May 2023", "2023"; in Chinese "2023年5月8日", ...)."""
    start, end = span.start, span.end
    if start == end:
        return _fmt(start, zh)
    if start.day == 1 and start.month == 1 and (end.month, end.day) == (12, 31) and start.year == end.year:
        return f"{start.year}年" if zh else str(start.year)
    if start.day == 1 and start.month == end.month and start.year == end.year and end.day >= 28:
        return f"{start.year}年{start.month}月" if zh else f"{_MONTHS[start.month - 1].capitalize()} {start.year}"
    return f"{_fmt(start, zh)}至{_fmt(end, zh)}" if zh else f"{_fmt(start)} to {_fmt(end)}"


def resolve_relative_times(text: str, chat_time: str | None) -> str:
    """Annotate "yesterday", "last Saturday", "two weeks ago", "next month"... with the dates they mean
    on ``chat_time`` (see ``processors.timeparse.relative_spans``)."""
    anchor = parse_chat_time(chat_time)
    if anchor is None:
        return text
    out = text
    at = len(text) + 1
    found = []
    for expr, span in relative_spans(text, anchor):
        found.append((expr, span))
    # replace from the end so earlier positions stay valid; each expression once, at its first place
    positions = []
    cursor = 0
    for expr, span in found:
        where = text.find(expr, cursor)
        if where < 0:
            continue
        positions.append((where, expr, span))
        cursor = where + len(expr)
    for where, expr, span in sorted(positions, reverse=True):
        if where + len(expr) > at:
            continue
        words = f"（{_span_words(span, True)}）" if is_chinese(expr) else f" ({_span_words(span)})"
        out = f"{out[: where + len(expr)]}{words}{out[where + len(expr) :]}"
        at = where
    return out


def third_person(sentence: str) -> tuple[str, str]:
    """``sentence`` (a user's words) in the third person, and a short key naming what it is about."""
    return third_person_zh(sentence) if is_chinese(sentence) else third_person_en(sentence)


def _is_filler(text: str) -> bool:
    """Whether ``text`` says nothing beyond courtesy ("Okay, feel free to ask", "好的，谢谢！")."""
    return is_filler_zh(text) if is_chinese(text) else is_filler_en(text)


def extract_rules(windows: Sequence[Window], settings: FastSettings) -> list[MemoryDraft]:
    """Rule-based drafts for each window: facts and preferences from user sentences, assistant statements.

    A user's question is not a memory of its own: it becomes the context (``background``) of what
    answers it: the assistant's reply and the user's next choices. A choice ("I'll choose X") is both a
    fact (UserMemory, so a search for it finds it among the text memories) and a preference; other
    preferences ("I prefer Y") are preference memories. A reply to the assistant's question keeps the
    question: "Peanuts." after "Do you have any food allergies?" is a memory of the answer, not a fragment too
    short to keep. A message shared by two overlapping windows is
    read only in the first, so nothing is extracted twice. Drafts are keyed ``rules:<window>:<n>`` and
    refine the fast draft of their window.
    """
    out: list[MemoryDraft] = []
    seen: set[int] = set()
    for window in windows:
        owned = [i for i in window.items if i.message_index not in seen and i.kind == "chat"]
        seen.update(i.message_index for i in window.items)
        drafts: list[MemoryDraft] = []
        asked: list[str] = []
        prompt: str | None = None  # the question the assistant's last message ended with
        for item in owned:
            if item.role == "user":
                made, questions = _user_drafts(item, window, asked, prompt, settings)
                made = [_spoken_by(d, item.name) for d in made] if item.name.strip() else made
                drafts += made
                asked = questions or asked
                prompt = None
            elif item.role == "assistant":
                said = _assistant_drafts(item, settings, asked)
                drafts += [_spoken_by(d, item.name, "assistant") for d in said] if item.name.strip() else said
                prompt = _question_of(item.text)
        out += [
            MemoryDraft(
                key=f"rules:{window.index}:{n}",
                memory=d.memory,
                memory_type=d.memory_type,
                title=d.title,
                sources=d.sources,
                extractor="rules",
                tags=d.tags,
                background=d.background,
                metadata=d.metadata,
                refines=f"window:{window.index}",
                confidence=d.confidence,
                usage=(ModelUsage(model_id=RULES_MODEL, kind="rules"),),
            )
            for n, d in enumerate(drafts)
        ]
    return out


def _sentences(text: str) -> list[str]:
    """Sentences, with first-person clauses joined by a comma, semicolon or "and" taken apart, and a question's
    premise ("Since I'm allergic to peanuts, what can I bring?") a sentence of its own."""
    out: list[str] = []
    for sentence in _SENTENCE.split(text):
        for n, clause in enumerate(_CLAUSE.split(_BULLET.sub("", sentence or ""))):
            clause = (clause or "").strip()
            if n and _BARE_LIKING.match(clause):
                clause = "I " + clause
            out += _premise(clause) if clause else []
    return out


_BULLET = re.compile(r"^\s*(?:[-*•]|\d{1,2}[.)])\s+")
_PREMISE_ZH = re.compile(r"^(?P<fact>(?:我|作为)[^，,？?]{2,})[，,](?P<ask>[^，,]*[？?])$")
_PREMISE = re.compile(
    r"^(?:(?:since|because|given that|now that)\s+)?(?P<fact>(?:I|I'm|I've|my|as an?)\b[^?]{4,}?),\s*"
    r"(?P<ask>(?:so\s+)?(?:what|which|where|when|how|who|why|any|can|could|should|would|do|does|is|are)\b"
    r"[^?]*\?)$",
    re.I,
)


_LEAD_IN = re.compile(r"^(?:I(?:'m| am| was)? (?:just |really )?(?:wonder(?:ing)?|curious|mean|guess|think|"
                      r"want to know|need to know|would like to know|'d like to know|have a question)|"
                      r"my (?:question|problem|issue) is)\W*$", re.I)
"""A premise that only opens the question ("I wonder, ...", "My question is, ...")."""


def _premise(sentence: str) -> list[str]:
    """``[premise, question]`` for a question that states a fact about the user first, else ``[sentence]``:
    "As a vegan, what should I order?" -> "I'm a vegan." and the question (kept as context)."""
    if is_chinese(sentence):
        if re.fullmatch(r"作为[^，,。？?！!]{1,12}", sentence):  # "作为素食者，我……" split at "，我" already
            return ["我是" + sentence[2:] + "。"]
        zh = _PREMISE_ZH.match(sentence)
        if zh is None:
            return [sentence]
        return [re.sub(r"^作为", "我是", zh.group("fact")) + "。", zh.group("ask")]
    found = _PREMISE.match(sentence.replace("\u2019", "'"))
    if found is None:
        return [sentence]
    if _LEAD_IN.match(found.group("fact")):
        return [sentence]
    fact = re.sub(r"^as (an?) ", r"I'm \1 ", found.group("fact"), flags=re.I)
    return [fact.rstrip(" ,;") + ".", found.group("ask")[0].upper() + found.group("ask")[1:]]


def _question_of(text: str) -> str | None:
    """The question an assistant's message ends with ("... Do you have any food allergies?"), or None."""
    last = next((p.strip() for p in reversed(_SENTENCE.split(_MARKER.sub("", text))) if p.strip()), "")
    return last if last.endswith(("?", "？")) and count_tokens(last) >= 3 else None


_FENCE = re.compile(r"```[ \t]*(?P<lang>[\w+#.-]{0,20})[^\n]*\n(?P<body>.*?)(?:```|\Z)", re.S)


def _code_blocks(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    """``text`` without its fenced code blocks, and the blocks as (lead-in, language, code): the line before a
    block that ends with ":" ("Here is my config:") is its lead-in."""
    prose: list[str] = []
    blocks: list[tuple[str, str, str]] = []
    at = 0
    for block in _FENCE.finditer(text):
        before = text[at:block.start()].rstrip()
        last = _SENTENCE.split(before)[-1].strip()
        lead = last if last.endswith((":", "：")) else ""
        prose.append(before[: len(before) - len(last)] if lead else before)
        blocks.append((lead.rstrip(":： "), block.group("lang"), block.group("body").rstrip()))
        at = block.end()
    prose.append(text[at:])
    return "\n".join(prose), blocks


def _code_drafts(
    item: Item, blocks: Sequence[tuple[str, str, str]], settings: FastSettings
) -> list[MemoryDraft]:
    """Each code block kept whole and verbatim (in parts when long), never split into "sentences"."""
    drafts = []
    for lead, lang, code in blocks:
        zh = is_chinese(lead)
        said = (f"用户分享了{lang or '代码'}" + (f"（{lead}）" if lead else "") + "：" if zh
                else f"The user shared {lang or 'code'}" + (f' ("{lead}")' if lead else "") + ":")
        parts = memory_parts(code, settings)
        for n, part in enumerate(parts):
            meta: JsonDict = {"extractor": "rules", "type": "code", "language": lang,
                              "message_index": item.message_index}
            if len(parts) > 1:
                meta.update(part=n, parts=len(parts))
            source = item.source.model_copy(update={"content": part[:200]})
            text = f"{said}\n```{lang}\n{part}\n```"
            drafts.append(_draft(text, "UserMemory", f"statement: code {lang}".strip(), source, meta, 0.5))
    return drafts


def _user_drafts(
    item: Item, window: Window, asked: Sequence[str], prompt: str | None, settings: FastSettings
) -> tuple[list[MemoryDraft], list[str]]:
    """Drafts of one user message, and the questions it asks (kept as context, not as memories); ``prompt``:
    the assistant's question that the message answers."""
    questions: list[str] = []
    chat_time = item.anchor_time
    prose, blocks = _code_blocks(_MARKER.sub("", item.text))
    drafts: list[MemoryDraft] = _code_drafts(item, blocks, settings)
    for n, raw in enumerate(_sentences(prose)):
        zh = is_chinese(raw)
        sentence = strip_interjection_zh(raw) if zh else INTERJECTION.sub("", raw, count=1)
        short = count_tokens(sentence) < 3 or _is_filler(sentence)
        spoken, key = third_person(sentence)  # once: each test below reads its key
        if prompt is not None and n == 0 and (short or _fragment(sentence, key)):
            if not _is_filler(raw) or _YES_NO.match(raw):  # "Peanuts.", "Yes.", "About 80 euros"; not "Thanks."
                drafts.append(_answer(item, raw, prompt))
                continue
        if short:
            continue
        if sentence.rstrip().endswith(("?", "？")) and not key.startswith("request:"):
            # "I wonder, what is ...?" asks too: context, not a fact ("Can you book a table?" is a request)
            questions.append(sentence)
            continue
        source = item.source.model_copy(update={"content": sentence})
        pref = preference_zh(sentence) if zh else preference(sentence)
        if pref is not None:
            verb, obj, polarity = pref
            obj_3p = pronouns_zh(obj) if zh else pronouns(obj)
            context = (asked_zh(asked) if zh else _asked(asked)) if verb in _CHOICES else ""
            topic = verb.removeprefix("'s ").removesuffix(" is") if verb.startswith("'s ") else obj_3p.lower()
            meta: JsonDict = {
                "extractor": "rules",
                "preference_type": "explicit",
                "preference": f"favorite {topic.removeprefix('favorite ')}: {obj_3p}" if verb.startswith("'s ")
                else f"{verb} {obj_3p}",
                "polarity": polarity,
                "topic": obj_3p.lower(),
                "context_summary": _context(window, item),
                "reasoning": f"The user said: {sentence!r}",
                "message_index": item.message_index,
                **_times(sentence, chat_time),
            }
            sep = "" if verb.startswith("'") else " "
            spoken = pronouns_zh(sentence) if sentence.startswith("我") else f"用户决定{obj}"  # "那就去京都吧"
            said = (f"{spoken.rstrip('。！!.')}{context}。" if zh
                    else f"The user{sep}{verb} {obj_3p}{context}.")
            text = resolve_relative_times(said, chat_time)
            if verb in _CHOICES or verb == "is" or verb.startswith("'s "):  # a choice, diet or favourite: a fact too
                fact_meta: JsonDict = {
                    "extractor": "rules",
                    "type": "choice" if verb in _CHOICES else "preference",
                    "sentence": sentence,
                    "message_index": item.message_index,
                    **_times(sentence, chat_time),
                }
                fact_key = f"choice: {obj_3p.lower()}" if verb in _CHOICES else key
                drafts.append(_draft(text, "UserMemory", fact_key, source, fact_meta, 0.8, asked))
            drafts.append(
                _draft(
                    text,
                    "PreferenceMemory",
                    f"preference: {topic}",
                    source,
                    meta,
                    0.8,
                    asked if context else (),
                )
            )
            continue
        if key.startswith("question:"):
            questions.append(sentence)
            continue
        text = resolve_relative_times(spoken, chat_time)
        meta = {
            "extractor": "rules",
            "sentence": sentence,
            "message_index": item.message_index,
            **_times(sentence, chat_time),
        }
        confidence = 0.5 if key.startswith("statement:") else 0.7
        drafts.append(_draft(text, "UserMemory", key, source, meta, confidence))
    return drafts, questions


_CHOICES = frozenset({"will choose", "chooses"})
_YES_NO = re.compile(r"^(yes|yeah|yep|no|nope|not really|never)\b", re.I)
_SUBJECT = re.compile(r"^(?:we|he|she|they|it|this|that|there|my|our|his|her|their|you)\b", re.I)


def _fragment(sentence: str, key: str) -> bool:
    """A reply that means little without the question it answers: "Around 15k euros", "Yes, twice", "两个";
    not a sentence of its own ("We're planning our wedding for next June" answers "How can I help?" alone).
    ``key``: the sentence's key from ``third_person``."""
    if is_chinese(sentence):
        return count_tokens(sentence) <= 6
    if not key.startswith("statement:"):
        return False
    return bool(_YES_NO.match(sentence)) or (len(sentence.split()) <= 6 and not _SUBJECT.match(sentence))


def _answer(item: Item, reply: str, prompt: str) -> MemoryDraft:
    """The memory of a user's reply to the assistant's question, the question kept with it."""
    chat_time = item.anchor_time
    reply = reply.strip().rstrip(".!")
    said = (answer_zh(reply, prompt) if is_chinese(reply + prompt)
            else f'The user answered "{reply}" when the assistant asked: "{prompt}"')
    text = resolve_relative_times(said, chat_time)
    meta: JsonDict = {"extractor": "rules", "type": "answer", "sentence": reply, "question": prompt,
                      "message_index": item.message_index, **_times(reply, chat_time)}
    source = item.source.model_copy(update={"content": reply})
    draft = _draft(text, "UserMemory", "answer: " + key_words(prompt, limit=6), source, meta, 0.6)
    return replace(draft, background=f"The assistant asked: {prompt}")


def _asked(questions: Sequence[str]) -> str:
    """' (asked: "...")' naming the question a choice answers, or ''."""
    if not questions:
        return ""
    return f' (asked: "{pronouns(questions[-1]).rstrip("?. ")}?")'


def _times(sentence: str, chat_time: str | None) -> JsonDict:
    """Metadata of the absolute times a sentence carries (see ``processors.fast.window_times``)."""
    anchor = parse_chat_time(chat_time)
    if anchor is None:
        return {}
    spans = relative_spans(sentence, anchor)
    out: JsonDict = {"dates": [anchor.isoformat()]}
    if spans:
        out["times"] = list(dict.fromkeys(span.iso() for _, span in spans))
        out["time_expressions"] = list(dict.fromkeys(expr.lower() for expr, _ in spans))
    return out


def _context(window: Window, item: Item) -> str:
    before = [
        render_line(i) for i in window.items if i.message_index < item.message_index and i.kind == "chat"
    ]
    return " / ".join(before[-2:])[:300]


def _assistant_drafts(item: Item, settings: FastSettings, asked: Sequence[str]) -> list[MemoryDraft]:
    text = item.text.strip()
    if count_tokens(text) < 8 or _is_filler(text):
        return []
    if all(p.strip().endswith(("?", "？")) or _is_filler(p) for p in _SENTENCE.split(text) if p.strip()):
        return []  # only asks: the user's reply keeps the question (``_answer``)
    source = item.source
    title = "assistant: " + key_words(re.sub(r"^[\w ]{0,20}:\s*", "", text), limit=6)
    parts = memory_parts(text, settings)  # a long reply: every part kept, none cut off
    drafts = []
    for n, body in enumerate(parts):
        meta: JsonDict = {"extractor": "rules", "message_index": item.message_index,
                          **_times(body, item.anchor_time)}
        if len(parts) > 1:
            meta.update(part=n, parts=len(parts))
        said = assistant_zh(body) if is_chinese(text) else f"The assistant said: {body}"
        memory = resolve_relative_times(said, item.anchor_time)
        named = f"{title} (part {n + 1} of {len(parts)})" if len(parts) > 1 else title
        drafts.append(_draft(memory, "LongTermMemory", named, source, meta, 0.6, asked))
    return drafts


def _spoken_by(draft: MemoryDraft, name: str, role: str = "user") -> MemoryDraft:
    """A named speaker's memory says who ("Alice moved to Seattle", not "The user": a group chat's speakers
    share one user id; "Gina said: ...", not "The assistant said"), and its key names them, so Alice's facts
    never supersede Bob's."""
    name = " ".join(name.split())[:64]
    zh, en = ("用户", "user") if role == "user" else ("助手", "assistant")

    def who(text: str) -> str:
        text = text.replace(zh, name)
        text = re.sub(rf"\b[Tt]he {en}'s\b", lambda _: f"{name}'s", text)  # a function: the name is never a pattern
        return re.sub(rf"\b[Tt]he {en}\b", lambda _: name, text)

    meta = {**draft.metadata, "speaker": name}
    if isinstance(meta.get("preference"), str):
        meta["preference"] = f"{name}: {meta['preference']}"
    head, newline, code = draft.memory.partition("\n") if meta.get("type") == "code" else (draft.memory, "", "")
    return replace(draft, memory=who(head) + newline + code, background=who(draft.background),  # code verbatim
                   title=f"{draft.title} [{name}]", metadata=meta)


def _draft(
    text: str,
    memory_type: MemoryType,
    title: str,
    source: SourceRef,
    meta: JsonDict,
    confidence: float,
    asked: Sequence[str] = (),
) -> MemoryDraft:
    tags = ("mode:fine", "rules") + (("preference",) if memory_type == "PreferenceMemory" else ())
    return MemoryDraft(
        key="",
        memory=text,
        memory_type=memory_type,
        title=title,
        sources=(source,),
        extractor="rules",
        tags=tags,
        metadata=meta,
        confidence=confidence,
        background=" ".join(f"用户问：{q}" if is_chinese(q) else f"The user asked: {q}" for q in asked),
    )
