"""Times in text (pure): session dates, relative expressions resolved against them, and times a query names.

A memory carries absolute times: the date of its session (``chat_time``) and the dates its relative
expressions mean on that date ("yesterday", "last Saturday", "two weeks ago", "next month"), as
:class:`Span` ranges of days. A query either asks *when* something happened or names a time ("in May
2023", "last year" relative to today is not resolvable without an anchor, so only absolute names
count); :func:`query_time` says which, and :func:`spans_match` compares the two.
"""

from __future__ import annotations

import calendar
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from schemas.memory import MemoryRecord

__all__ = [
    "MONTHS",
    "QueryTime",
    "Span",
    "chat_time_label",
    "parse_chat_time",
    "query_time",
    "record_spans",
    "relative_spans",
    "spans_match",
    "time_ranking",
]

logger = logging.getLogger(__name__)

MONTHS = "january february march april may june july august september october november december".split()
_MONTH_ABBR = {m[:3]: n for n, m in enumerate(MONTHS, 1)} | {"sept": 9}
_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()
_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "a couple of": 2, "a few": 3, "couple of": 2, "few": 3, "several": 3,
}  # fmt: skip


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """An inclusive range of days."""

    start: date
    end: date

    @classmethod
    def day(cls, day: date) -> Span:
        return cls(day, day)

    def iso(self) -> str:
        """``YYYY-MM-DD`` for one day, ``YYYY-MM-DD/YYYY-MM-DD`` for a range."""
        return self.start.isoformat() if self.start == self.end else f"{self.start}/{self.end}"

    @classmethod
    def from_iso(cls, text: str) -> Span | None:
        """The inverse of :meth:`iso`; None for malformed text."""
        try:
            first, _, last = text.partition("/")
            return cls(date.fromisoformat(first), date.fromisoformat(last or first))
        except ValueError:
            return None


@lru_cache(maxsize=16_384)
def parse_chat_time(value: str | None) -> date | None:
    """The date of a chat time given as ISO ("2024-07-20T10:00") or "1:56 pm on 8 May, 2023"; else None
    (memoized: pure, and a search that names a time reads every candidate's chat times)."""
    if not value:
        return None
    iso = re.match(r"\s*(\d{4})-(\d{2})-(\d{2})", value)
    if iso:
        try:
            return date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        except ValueError:
            return None
    words = re.search(r"(\d{1,2})\s+([A-Za-z]+),?\s+(\d{4})", value)
    if words and words.group(2).lower() in MONTHS:
        try:
            return date(int(words.group(3)), MONTHS.index(words.group(2).lower()) + 1, int(words.group(1)))
        except ValueError:
            return None
    return None


_CLOCK = re.compile(r"\b(\d{1,2}):(\d{2})\s*([ap])\.?\s?m\b\.?|\b(\d{1,2}):(\d{2})\b", re.IGNORECASE)


@lru_cache(maxsize=4096)
def chat_time_label(value: str) -> str:
    """A chat time as a window shows it: written out ("1:56 pm on 8 May, 2023") as ISO with the time of day
    where given ("2023-05-08 13:56"); ISO and unreadable forms as given.

    Every window starts with its time, and on LoCoMo the written form is 6 of a window's 80 words: the ISO
    form leaves more of a reader's budget to content. Windows are still embedded and indexed with the time in
    words (``schemas.text.times_in_words``), the form questions name times in.
    """
    day = parse_chat_time(value)
    if day is None or re.match(r"\s*\d{4}-\d{2}-\d{2}", value):
        return value
    clock = _CLOCK.search(value)
    if clock is None:
        return day.isoformat()
    if clock.group(1):
        hour = int(clock.group(1)) % 12 + (12 if clock.group(3).lower() == "p" else 0)
        minute = int(clock.group(2))
        valid = int(clock.group(1)) <= 12
    else:
        hour, minute = int(clock.group(4)), int(clock.group(5))
        valid = True
    if not valid or hour > 23 or minute > 59:
        return day.isoformat()
    return f"{day.isoformat()} {hour:02d}:{minute:02d}"


def _month_span(year: int, month: int) -> Span:
    return Span(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))


def _shift_month(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


def _week_of(day: date) -> Span:
    monday = day - timedelta(days=day.weekday())
    return Span(monday, monday + timedelta(days=6))


_AGO = re.compile(
    r"\b(?P<n>\d+|a couple of|couple of|a few|few|several|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\s+(?P<unit>day|week|month|year)s?\s+ago\b",
    re.I,
)
_NAMED = re.compile(
    r"\b(?P<which>last|this|next|past)\s+(?P<what>week(?:end)?|month|year|"
    + "|".join(_WEEKDAYS)
    + r")\b",
    re.I,
)
_SIMPLE = re.compile(r"\b(the day before yesterday|the day after tomorrow|today|tonight|this morning|"
                     r"this afternoon|yesterday|last night|tomorrow)\b", re.I)
_AHEAD = re.compile(
    r"\b(?:in\s+(?P<n>\d+|a couple of|a few|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\s+(?P<unit>day|week|month|year)s?\b(?!\s+ago)"
    r"|(?P<n2>\d+|a couple of|a few|an?|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\s+(?P<unit2>day|week|month|year)s?\s+from\s+(?:now|today))",
    re.I,
)
_NAMED_MONTH = re.compile(r"\b(?P<which>last|this|next|past)\s+(?P<month>" + "|".join(MONTHS) + r")\b", re.I)
_SIMPLE_ZH = {"大前天": -3, "前天": -2, "昨天": -1, "昨晚": -1, "今天": 0, "今晚": 0, "今早": 0, "明天": 1, "后天": 2,
              "大后天": 3}
_SIMPLE_ZH_RE = re.compile("|".join(sorted(_SIMPLE_ZH, key=len, reverse=True)))
_ZH_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10, "几": 3}
_NAMED_ZH = re.compile(r"(?P<which>上|这|本|下)个?(?:(?P<week>周|星期|礼拜)(?P<day>[一二三四五六日天末])?|(?P<month>月))")
_YEAR_ZH = re.compile(r"(?P<which>前|去|今|明)年")
_AGO_ZH = re.compile(r"(?P<n>\d+|[一二两三四五六七八九十几]+)个?(?P<unit>天|周|星期|礼拜|月|年)(?:以前|之前|前)")


def _zh_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    if text.startswith("十"):
        return 10 + _ZH_DIGITS.get(text[1:], 0)
    if "十" in text:
        tens, _, ones = text.partition("十")
        return _ZH_DIGITS.get(tens, 1) * 10 + _ZH_DIGITS.get(ones, 0)
    return _ZH_DIGITS.get(text, 1)


def _simple_zh(m: re.Match[str], anchor: date) -> Span:
    return Span.day(anchor + timedelta(days=_SIMPLE_ZH[m.group(0)]))


def _named_zh(m: re.Match[str], anchor: date) -> Span:
    """上周六, 这周末, 下周, 上个月: weeks start on Monday, so 上周六 is the Saturday of last week, as Chinese means it."""
    step = {"上": -1, "这": 0, "本": 0, "下": 1}[m.group("which")]
    if m.group("month"):
        return _month_span(*_shift_month(anchor, step))
    week = _week_of(anchor + timedelta(weeks=step))
    day = m.group("day")
    if day is None:
        return week
    if day == "末":
        return Span(week.start + timedelta(days=5), week.end)
    return Span.day(week.start + timedelta(days=6 if day in "日天" else _ZH_DIGITS[day] - 1))


def _year_zh(m: re.Match[str], anchor: date) -> Span:
    year = anchor.year + {"前": -2, "去": -1, "今": 0, "明": 1}[m.group("which")]
    return Span(date(year, 1, 1), date(year, 12, 31))


_UNITS_ZH = {"天": "day", "月": "month", "年": "year"}  # 周, 星期, 礼拜: week


def _ago_zh(m: re.Match[str], anchor: date) -> Span:
    return _shifted(anchor, -_zh_number(m.group("n")), _UNITS_ZH.get(m.group("unit"), "week"))


def _shifted(anchor: date, n: int, unit: str) -> Span:
    """The day, week (Monday to Sunday), month or year ``n`` of ``unit`` away from ``anchor`` (n < 0: before)."""
    if unit == "day":
        return Span.day(anchor + timedelta(days=n))
    if unit == "week":
        return _week_of(anchor + timedelta(weeks=n))
    if unit == "month":
        return _month_span(*_shift_month(anchor, n))
    return Span(date(anchor.year + n, 1, 1), date(anchor.year + n, 12, 31))


def _count(raw: str) -> int:
    """"3", "three", "a few" as a number (an unknown word: 1)."""
    return int(raw) if raw.isdigit() else _NUMBERS.get(raw.lower(), 1)


def _simple(m: re.Match[str], anchor: date) -> Span:
    shift = {"yesterday": -1, "last night": -1, "tomorrow": 1, "the day before yesterday": -2,
             "the day after tomorrow": 2}.get(m.group(1).lower(), 0)
    return Span.day(anchor + timedelta(days=shift))


def _ahead(m: re.Match[str], anchor: date) -> Span:
    """"in two weeks", "3 days from now": the day, week, month or year that far ahead."""
    return _shifted(anchor, _count(m.group("n") or m.group("n2")), (m.group("unit") or m.group("unit2")).lower())


def _named_month(m: re.Match[str], anchor: date) -> Span:
    """"last June" is the latest June before this month, "next June" the first after it, "this June" this year's."""
    if m.group("month") in ("may", "march"):  # "this may take a while" names no month: the verbs stay lower-case
        raise ValueError("not a month")
    month = MONTHS.index(m.group("month").lower()) + 1
    which = m.group("which").lower()
    year = anchor.year
    if which in ("last", "past") and month >= anchor.month:
        year -= 1
    elif which == "next" and month <= anchor.month:
        year += 1
    return _month_span(year, month)


def _named(m: re.Match[str], anchor: date) -> Span:
    which, what = m.group("which").lower(), m.group("what").lower()
    step = {"last": -1, "past": -1, "this": 0, "next": 1}[which]
    if what == "week":
        return _week_of(anchor + timedelta(weeks=step))
    if what == "weekend":
        saturday = _week_of(anchor + timedelta(weeks=step)).start + timedelta(days=5)
        return Span(saturday, saturday + timedelta(days=1))
    if what == "month":
        return _month_span(*_shift_month(anchor, step))
    if what == "year":
        return Span(date(anchor.year + step, 1, 1), date(anchor.year + step, 12, 31))
    delta = _WEEKDAYS.index(what) - anchor.weekday()
    if step < 0:
        delta = delta - 7 if delta >= 0 else delta
    elif step > 0:
        delta = delta + 7 if delta <= 0 else delta
    return Span.day(anchor + timedelta(days=delta))


def _ago(m: re.Match[str], anchor: date) -> Span:
    return _shifted(anchor, -_count(m.group("n")), m.group("unit").lower())


_Resolver = Callable[[re.Match[str], date], Span]
_RESOLVERS: tuple[tuple[re.Pattern[str], _Resolver], ...] = (
    (_SIMPLE, _simple), (_NAMED, _named), (_AGO, _ago), (_AHEAD, _ahead), (_NAMED_MONTH, _named_month)
)
_RESOLVERS_ZH: tuple[tuple[re.Pattern[str], _Resolver], ...] = (
    (_SIMPLE_ZH_RE, _simple_zh), (_NAMED_ZH, _named_zh), (_YEAR_ZH, _year_zh), (_AGO_ZH, _ago_zh)
)


def relative_spans(text: str, anchor: date | None) -> list[tuple[str, Span]]:
    """Relative time expressions in ``text`` with the days they mean on ``anchor``, in text order.

    Understood: today, tonight, this morning/afternoon, yesterday, last night, tomorrow; last/this/next
    week, weekend, month, year; last/this/next <weekday> and <month>; the day before yesterday, the day after
    tomorrow; "<n> days/weeks/months/years ago" (n a number, a word up to ten, "a", "a few", "a couple of",
    "several"), "in <n> days", "<n> weeks from now"; and in Chinese 昨天, 前天, 明天, 上周六, 这周末,
    下个月, 去年, 两周前, 三个月前. Without an anchor nothing resolves, and an expression whose days fall outside
    the calendar (years 1 to 9999: "3000 years ago") is passed over, never an error.
    """
    if anchor is None:
        return []
    found: list[tuple[int, str, Span]] = []
    for pattern, resolve in _RESOLVERS + (_RESOLVERS_ZH if _HAN.search(text) else ()):
        for m in pattern.finditer(text):
            try:
                span = resolve(m, anchor)
            except (ValueError, OverflowError):  # before year 1 or after 9999, or a number past any calendar
                continue
            found.append((m.start(), m.group(0), span))
    found.sort(key=lambda f: f[0])
    return [(expr, span) for _, expr, span in found]


@dataclass(frozen=True, slots=True)
class QueryTime:
    """What a query says about time: whether it asks when, and the absolute times it names."""

    asks_when: bool = False
    spans: tuple[Span, ...] = ()


_WHEN = re.compile(
    r"\b(when|what (?:time|date|day|month|year)|which (?:day|month|year|date)|how long ago|since when)\b"
    r"|什么时候|哪天|哪一天|几月|哪年|何时",
    re.I,
)
_DAY_MONTH_YEAR = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]{3,9})\.?,?\s+(\d{4})\b")
_MONTH_DAY_YEAR = re.compile(r"\b([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b")
_MONTH_YEAR = re.compile(r"\b([A-Za-z]{3,9})\.?,?\s+(\d{4})\b")
_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_YEAR = re.compile(r"\b(19\d{2}|20\d{2})\b")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_CJK_DATE = re.compile(r"(\d{4})年(?:(\d{1,2})月(?:(\d{1,2})[日号])?)?")


def _month(word: str) -> int | None:
    word = word.lower()
    if word in MONTHS:
        return MONTHS.index(word) + 1
    return _MONTH_ABBR.get(word[:4]) if word[:4] == "sept" else _MONTH_ABBR.get(word) if len(word) == 3 else None


def _safe(make: object, *args: int) -> Span | None:
    try:
        return make(*args)  # type: ignore[operator, no-any-return]
    except ValueError:
        return None


@lru_cache(maxsize=16_384)
def query_time(text: str, today: date | None = None) -> QueryTime:
    """Whether ``text`` asks when, and the absolute days, months or years it names, and with ``today`` (the
    asker's date) its relative ones too: "yesterday", "last Saturday", 上周六 (memoized: pure, and search asks
    it of the same memory texts again and again)."""
    spans: list[Span] = [span for _, span in relative_spans(text, today)] if today is not None else []
    taken: list[tuple[int, int]] = []

    def free(m: re.Match[str]) -> bool:
        return not any(a <= m.start() < b or a < m.end() <= b for a, b in taken)

    for m in _ISO_DAY.finditer(text):
        span = _safe(lambda y, mo, d: Span.day(date(y, mo, d)), int(m[1]), int(m[2]), int(m[3]))
        if span:
            spans.append(span)
            taken.append(m.span())
    for pattern, order in ((_DAY_MONTH_YEAR, (1, 2, 3)), (_MONTH_DAY_YEAR, (2, 1, 3))):
        for m in pattern.finditer(text):
            month = _month(m.group(order[1]))
            if month is None or not free(m):
                continue
            day_of = int(m.group(order[0]))
            span = _safe(lambda y, mo, d: Span.day(date(y, mo, d)), int(m.group(order[2])), month, day_of)
            if span:
                spans.append(span)
                taken.append(m.span())
    for m in _MONTH_YEAR.finditer(text):
        month = _month(m.group(1))
        if month is not None and free(m) and (span := _safe(_month_span, int(m.group(2)), month)):
            spans.append(span)
            taken.append(m.span())
    for m in _CJK_DATE.finditer(text):
        year, month_text, day_text = int(m[1]), m[2], m[3]
        if day_text and month_text:
            span = _safe(lambda y, mo, d: Span.day(date(y, mo, d)), year, int(month_text), int(day_text))
        elif month_text:
            span = _safe(_month_span, year, int(month_text))
        else:
            span = _safe(lambda y: Span(date(y, 1, 1), date(y, 12, 31)), year)
        if span:
            spans.append(span)
            taken.append(m.span())
    for m in _YEAR.finditer(text):
        if free(m):
            year = int(m.group(1))
            spans.append(Span(date(year, 1, 1), date(year, 12, 31)))
    return QueryTime(bool(_WHEN.search(text)), tuple(dict.fromkeys(spans)))


def spans_match(wanted: tuple[Span, ...], have: tuple[Span, ...]) -> bool:
    """Whether any span in ``have`` overlaps any span in ``wanted``."""
    return any(h.start <= w.end and w.start <= h.end for w in wanted for h in have)


def record_spans(record: MemoryRecord) -> tuple[Span, ...]:
    """The absolute times a memory carries: session dates, resolved relative times, its sources' chat
    times and ``valid_from`` (see ``processors.fast.window_times``)."""
    spans: list[Span] = []
    meta = record.metadata
    for key in ("dates", "times"):
        values = meta.get(key)
        if isinstance(values, list):
            spans += [span for v in values if isinstance(v, str) and (span := Span.from_iso(v))]
    for source in record.sources:
        day = parse_chat_time(source.chat_time)
        if day is not None:
            spans.append(Span.day(day))
    if record.valid_from is not None:
        spans.append(Span.day(record.valid_from.date()))
    return tuple(dict.fromkeys(spans))


def _states_time(record: MemoryRecord) -> bool:
    """Whether a memory's text says when something happened (a resolved relative expression or a date)."""
    return bool(record.metadata.get("times")) or bool(query_time(record.memory).spans)


def time_ranking(asked: QueryTime, ordered: Sequence[str], records: Mapping[str, MemoryRecord]) -> list[str]:
    """Candidates (``ordered`` best first) that answer the query's time: those whose times overlap a time
    the query names, else (none does, or it names none), when it asks when, those that state a time; [] when
    the query is about neither."""
    if asked.spans:
        matched = [i for i in ordered if spans_match(asked.spans, record_spans(records[i]))]
        if matched or not asked.asks_when:
            return matched
    if asked.asks_when:
        return [i for i in ordered if _states_time(records[i])]
    return []
