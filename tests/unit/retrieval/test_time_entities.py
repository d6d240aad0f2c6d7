"""Times (processors.timeparse), entity links (processors.entities) and query intent (processors.intent)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from processors.entities import entity_names, entity_relations, speaker_labels
from processors.intent import asks_preference, first_person, is_source_error
from processors.retrieval import SearchQuery, SearchSettings, score_hits
from processors.timeparse import Span, parse_chat_time, query_time, record_spans, relative_spans, time_ranking
from schemas.events import ConversationRecorded, MemoryAdded
from tests.unit.retrieval.records import record

ANCHOR = date(2023, 5, 8)  # a Monday


def test_relative_expressions_resolve_against_the_session_date() -> None:
    found = {
        e.lower(): s.iso()
        for e, s in relative_spans(
            "Yesterday, last Saturday, two weeks ago, next month, last week, a few days ago, 3 years ago, "
            "this weekend and next Friday",
            ANCHOR,
        )
    }
    assert found == {
        "yesterday": "2023-05-07",
        "last saturday": "2023-05-06",
        "two weeks ago": "2023-04-24/2023-04-30",
        "next month": "2023-06-01/2023-06-30",
        "last week": "2023-05-01/2023-05-07",
        "a few days ago": "2023-05-05",
        "3 years ago": "2020-01-01/2020-12-31",
        "this weekend": "2023-05-13/2023-05-14",
        "next friday": "2023-05-12",
    }
    assert relative_spans("yesterday", None) == []
    assert parse_chat_time("1:56 pm on 8 May, 2023") == ANCHOR and parse_chat_time("31 Feb, 2023") is None


def test_days_ahead_and_named_months_resolve() -> None:
    found = {
        e.lower(): s.iso()
        for e, s in relative_spans(
            "the day after tomorrow, the day before yesterday, in two weeks, 3 days from now, in a month, "
            "last May, next May, this June, last June",
            ANCHOR,
        )
    }
    assert found == {
        "the day after tomorrow": "2023-05-10",  # not "tomorrow" inside it
        "the day before yesterday": "2023-05-06",
        "in two weeks": "2023-05-22/2023-05-28",
        "3 days from now": "2023-05-11",
        "in a month": "2023-06-01/2023-06-30",
        "last may": "2022-05-01/2022-05-31",  # asked in May: the May before
        "next may": "2024-05-01/2024-05-31",
        "this june": "2023-06-01/2023-06-30",
        "last june": "2022-06-01/2022-06-30",
    }
    assert relative_spans("I was in 2 weeks ago", ANCHOR)[0][0] == "2 weeks ago"  # not "in 2 weeks"
    assert relative_spans("This may take a while; next march we walk.", ANCHOR) == []  # verbs, not months


def test_chinese_relative_expressions_resolve_too() -> None:
    """ANCHOR is Monday 8 May 2023; Chinese weeks start on Monday, so 上周六 is the Saturday of last week."""
    text = "昨天、前天、大前天、明天、上周六、这周末、下周一、上个月、下个月、去年、两周前、三个月前、十二天前和上周"
    found = {e: s.iso() for e, s in relative_spans(text, ANCHOR)}
    assert found == {
        "昨天": "2023-05-07", "前天": "2023-05-06", "大前天": "2023-05-05", "明天": "2023-05-09",
        "上周六": "2023-05-06", "这周末": "2023-05-13/2023-05-14", "下周一": "2023-05-15",
        "上个月": "2023-04-01/2023-04-30", "下个月": "2023-06-01/2023-06-30", "去年": "2022-01-01/2022-12-31",
        "两周前": "2023-04-24/2023-04-30", "三个月前": "2023-02-01/2023-02-28", "十二天前": "2023-04-26",
        "上周": "2023-05-01/2023-05-07",
    }  # fmt: skip
    assert [e for e, _ in relative_spans(text, ANCHOR)][:3] == ["昨天", "前天", "大前天"]  # in text order
    assert relative_spans("昨天", None) == [] and relative_spans("今年的计划", ANCHOR)[0][1].iso() == "2023-01-01/2023-12-31"


def test_a_querys_relative_times_resolve_against_the_askers_day() -> None:
    today = date(2023, 5, 9)
    assert query_time("What did I do yesterday?", today).spans == (Span.day(date(2023, 5, 8)),)
    assert query_time("我上周六做了什么？", today).spans == (Span.day(date(2023, 5, 6)),)
    assert query_time("What did I do yesterday?").spans == ()  # no day to resolve against
    hiking = record("h", "hiking", metadata={"dates": ["2023-05-08"]})
    dated = record("d", "on 1 May 2023", metadata={"dates": ["2023-05-01"]})
    plain = record("p", "no time at all")
    records = {"h": hiking, "d": dated, "p": plain}
    assert time_ranking(query_time("What did I do yesterday?", today), ["p", "d", "h"], records) == ["h"]
    # a time that no memory has: a "when" question still ranks the memories that state a time
    later = query_time("When did I go out yesterday?", date(2024, 1, 1))
    assert time_ranking(later, ["p", "d", "h"], records) == ["d"]


def test_times_outside_the_calendar_are_passed_over_never_an_error() -> None:
    """"3000 years ago" is before year 1: it raised ValueError, and the add that said it went to the dead-letter
    topic (its memories lost); "May 0000" in a memory or query raised in search."""
    text = "The pyramids were built 3000 years ago, 99999年前, 1000000000000000000000 days ago; yesterday"
    assert [e for e, _ in relative_spans(text, ANCHOR)] == ["yesterday"]
    assert relative_spans("9" * 5000 + " days ago", ANCHOR) == [] and relative_spans("tomorrow", date.max) == []
    assert query_time("What happened in May 0000 or 0000年?").spans == ()
    assert query_time("May 0000 and June 2021").spans == (Span(date(2021, 6, 1), date(2021, 6, 30)),)


def test_query_time_names_days_months_years_and_asks_when() -> None:
    assert query_time("When did Caroline go to the support group?") == (query_time("x").__class__(True, ()))
    named = query_time("What did Mel do on 7 May 2023, in July 2023, on 2023-08-01 or in 2022? 2021年3月")
    assert [s.iso() for s in named.spans] == [
        "2023-08-01",
        "2023-05-07",
        "2023-07-01/2023-07-31",
        "2021-03-01/2021-03-31",
        "2022-01-01/2022-12-31",
    ]
    assert not named.asks_when and query_time("她什么时候去的？").asks_when


def test_time_ranking_prefers_memories_of_the_named_time_or_stating_a_time() -> None:
    may = record(
        "may",
        "Caroline: I went to the group yesterday.",
        metadata={"dates": ["2023-05-08"], "times": ["2023-05-07"]},
    )
    june = record("june", "Caroline: it was fun.", metadata={"dates": ["2023-06-20"]})
    assert record_spans(may) == (Span.day(date(2023, 5, 8)), Span.day(date(2023, 5, 7)))
    records = {"may": may, "june": june}
    assert time_ranking(query_time("What happened in June 2023?"), ["may", "june"], records) == ["june"]
    assert time_ranking(query_time("When did she go?"), ["june", "may"], records) == ["may"]
    assert time_ranking(query_time("What did she do?"), ["june", "may"], records) == []
    settings = SearchSettings(weight_time=2.0)
    hits = score_hits(
        "text",
        {"dense": ["june", "may"]},
        records,
        query=SearchQuery(query="When did she go?"),
        query_vector=[],
        terms=[],
        flt=None,
        settings=settings,
    )
    assert [h.record.id for h in hits] == ["may", "june"] and hits[0].parts["time"] > 0


def test_entity_names_skip_speakers_sentence_starts_and_function_words() -> None:
    text = "Caroline: I went to the LGBTQ group in Boston. Wow, Melanie!\nMelanie: Great, Caroline."
    assert speaker_labels(text) == {"caroline", "melanie"}
    assert entity_names(text) == {"lgbtq", "boston"}
    assert entity_names("您可以考虑【七天、全季、希尔顿】等等") == {"七天", "全季", "希尔顿"}


def test_entity_relations_link_memories_naming_the_same_thing_deterministically() -> None:
    event = ConversationRecorded(
        event_id=uuid.UUID(int=7),
        occurred_at=datetime(2023, 5, 8, tzinfo=UTC),
        key="c",
        cube_id="c",
        user_id="u",
        session_id="s",
        messages=[],
        task_id="t",
    )
    new = MemoryAdded(
        event_id=uuid.UUID(int=8),
        occurred_at=event.occurred_at,
        key="c",
        memory_id="new",
        cube_id="c",
        user_id="u",
        memory="Melanie: We camped near Boston again.",
    )
    old = record("old", "Caroline: I moved to Boston last year.", cube_id="c")
    other = record("other", "Caroline: I like pottery.", cube_id="c")
    views = {"new": [(old, 0.8), (other, 0.7)]}
    first = entity_relations(event, [new], views, {})
    assert [(r.source_id, r.target_id, r.relation, r.metadata["entities"]) for r in first] == [
        ("new", "old", "RELATES", ["boston"])
    ]
    assert entity_relations(event, [new], views, {}) == first  # same input, same ids
    assert entity_relations(event, [new], views, {"new": "old"}) == []  # merged away: links nothing
    mine = record("mine", "Caroline: Boston again.", cube_id="c", origin_event_id=str(event.event_id))
    assert entity_relations(event, [new], {"new": [(mine, 0.9)]}, {}) == []  # a redelivery's own memories


def test_query_intent_and_failed_sources() -> None:
    assert (
        first_person("Which hotel did I pick?")
        and first_person("我选了哪家")
        and not first_person("Is it big?")
    )
    assert asks_preference("Please recommend a hotel") and not asks_preference("When did she go?")
    assert is_source_error(record("e", "could not fetch", metadata={"type": "source_error"}))
    assert not is_source_error(record("c", "content"))


def test_a_failed_fetch_never_outranks_content_and_first_person_prefers_own_words() -> None:
    failed = record(
        "failed", "file report.pdf could not be fetched", metadata={"type": "source_error", "placeholder": True}
    )
    content = record("content", "The report says sales grew 4%.")
    records = {"failed": failed, "content": content}
    hits = score_hits(
        "text",
        {"dense": ["failed", "content"], "keyword": ["failed", "content"]},
        records,
        query=SearchQuery(query="What does the report say?"),
        query_vector=[],
        terms=["report"],
        flt=None,
        settings=SearchSettings(),
    )
    assert [h.record.id for h in hits] == ["content", "failed"]  # recorded, still returned, ranked last
    said = record("said", "You could consider Ji Hotel.", sources=[{"role": "assistant"}])
    chose = record("chose", "I'll choose 7 Days Inn.", sources=[{"role": "user"}])
    both = {"said": said, "chose": chose}
    for query, first in (("Which hotel did I pick?", "chose"), ("Which hotel is there?", "said")):
        ranked = score_hits(
            "text", {"dense": ["said", "chose"]}, both, query=SearchQuery(query=query),
            query_vector=[], terms=[], flt=None, settings=SearchSettings(),
        )  # fmt: skip
        assert ranked[0].record.id == first
        assert ranked[0].parts["boost"] == (1.2 if first == "chose" else 1.0)
    # in a shared cube, another user's own words are not the asker's: "Which hotel did I pick?" asked by u2
    theirs = {"said": said, "chose": chose.model_copy(update={"user_id": "u2"})}
    for asker, boost in (("u1", 1.0), ("u2", 1.2), ("", 1.2)):
        ranked = score_hits(
            "text", {"dense": ["said", "chose"]}, theirs, query=SearchQuery(query="Which hotel did I pick?", user_id=asker),
            query_vector=[], terms=[], flt=None, settings=SearchSettings(),
        )  # fmt: skip
        assert next(h for h in ranked if h.record.id == "chose").parts["boost"] == boost, asker
