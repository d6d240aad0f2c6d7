"""The offline rule-based extractor: third-person facts, explicit preferences, clearly labelled as rules."""

from __future__ import annotations

from processors.chunking import plan_windows
from processors.fast import FastSettings
from processors.reader import read_messages
from processors.rules import RULES_MODEL, extract_rules, parse_chat_time, resolve_relative_times, third_person
from tests.support.examples import EXAMPLE_1, EXAMPLE_3_LOVE


def rules(messages: list[dict[str, object]], **window: int) -> list[tuple[str, str, str]]:
    items = read_messages(messages).items
    settings = FastSettings(**window)
    drafts = extract_rules(
        plan_windows(items, window_tokens=settings.window_tokens, overlap=settings.window_overlap), settings
    )
    for draft in drafts:
        assert draft.extractor == "rules" and draft.metadata["extractor"] == "rules"
        assert [u.model_id for u in draft.usage] == [RULES_MODEL] and draft.usage[0].kind == "rules"
    return [(d.memory_type, d.title, d.memory) for d in drafts]


def test_example_1() -> None:
    assert rules(EXAMPLE_1) == [
        (
            "UserMemory",
            "plans to travel to",
            "The user plans to travel to Guangzhou during the summer vacation.",
        ),
        (
            "LongTermMemory",
            "assistant: you can consider",
            "The assistant said: You can consider [7 Days Inn, Ji Hotel, Hilton], etc.",
        ),
        ("UserMemory", "choice: 7 days inn", CHOICE),
        ("PreferenceMemory", "preference: 7 days inn", CHOICE),
    ]


CHOICE = 'The user will choose 7 Days Inn (asked: "What chain hotels are available for accommodation?").'


def test_a_question_is_context_of_its_answer_not_a_memory() -> None:
    items = read_messages(EXAMPLE_1).items
    drafts = extract_rules(plan_windows(items), FastSettings())
    assert not any("The user asked:" in d.memory for d in drafts)
    question = "The user asked: I’ve planned to travel"  # not this: the question alone is the context
    answer = next(d for d in drafts if d.memory.startswith("The assistant said"))
    assert answer.background == "The user asked: What chain hotels are available for accommodation?"
    assert not answer.background.startswith(question)
    choice = next(d for d in drafts if d.title.startswith("choice:"))
    assert choice.memory_type == "UserMemory" and choice.metadata["type"] == "choice"
    prefers = rules([{"role": "user", "content": "Which one is quieter? I prefer quiet rooms."}])
    assert prefers == [("PreferenceMemory", "preference: quiet rooms", "The user prefers quiet rooms.")]


def test_an_interjection_never_hides_what_follows_it() -> None:
    """A sentence opening with "Sure," or "Thanks," was dropped whole as filler: "Sure, I booked a table at Luigi"
    left no memory of the booking. Courtesy alone is still dropped (Example 1's last reply)."""
    got = rules([
        {"role": "user", "content": "Thanks, I am allergic to peanuts. Great, I will take the 7 pm slot."},
        {"role": "assistant", "content": "Sure, I booked a table at Luigi for 7 pm on Friday."},
        {"role": "user", "content": "Okay! Thank you so much."},
        {"role": "assistant", "content": "Okay, feel free to ask me if you have any other questions."},
    ])
    texts = [text for _, _, text in got]
    assert "The user is allergic to peanuts." in texts
    assert "The user will choose the 7 pm slot." in texts
    assert "The assistant said: Sure, I booked a table at Luigi for 7 pm on Friday." in texts
    assert not any("feel free" in t or "Thank" in t or "Okay" in t for t in texts), texts


def test_a_reply_to_the_assistants_question_keeps_the_question() -> None:
    """"Peanuts." alone was too short to keep and "About 80 euros" said nothing without its question; a
    question-only assistant message is not a memory of its own (the answer carries it)."""
    got = rules([
        {"role": "assistant", "content": "Do you have any food allergies?"},
        {"role": "user", "content": "Peanuts."},
        {"role": "assistant", "content": "Noted. What is your budget per night?"},
        {"role": "user", "content": "About 80 euros"},
        {"role": "assistant", "content": "Do you have kids?"},
        {"role": "user", "content": "Yes. Two daughters."},
        {"role": "assistant", "content": "Is there anything else I can help you with?"},
        {"role": "user", "content": "Thanks."},
    ])
    assert got[:3] == [
        ("UserMemory", "answer: do you have any food allergies",
         'The user answered "Peanuts" when the assistant asked: "Do you have any food allergies?"'),
        ("UserMemory", "answer: what is your budget per night",
         'The user answered "About 80 euros" when the assistant asked: "What is your budget per night?"'),
        ("UserMemory", "answer: do you have kids", 'The user answered "Yes" when the assistant asked: "Do you have kids?"'),
    ]
    assert [text for _, _, text in got[3:]] == ["The user said: Two daughters."]  # "Thanks." answers nothing
    items = read_messages([{"role": "assistant", "content": "Do you have any food allergies?"},
                           {"role": "user", "content": "Peanuts."}]).items
    [answer] = extract_rules(plan_windows(items), FastSettings())
    assert answer.background == "The assistant asked: Do you have any food allergies?"
    assert answer.metadata["question"] == "Do you have any food allergies?" and answer.metadata["type"] == "answer"


def test_courtesy_is_a_whole_sentence_not_a_first_word() -> None:
    got = [text for _, _, text in rules([{"role": "user", "content": "Great Wall tickets are booked for May 3. "
                                                                      "Cool jazz is what I play. Okay. Sounds good!"}])]
    assert got == ["The user said: Great Wall tickets are booked for May 3.", "The user said: Cool jazz is what the user plays."]


EXAMPLE_1_ZH = [  # the seed's Chinese original of Example 1
    {"role": "user", "content": "我暑假定好去广州旅游，住宿的话有哪些连锁酒店可选？"},
    {"role": "assistant", "content": "您可以考虑【七天、全季、希尔顿】等等"},
    {"role": "user", "content": "我选七天"},
    {"role": "assistant", "content": "好的，有其他问题再问我。"},
]


def test_chinese_is_extracted_in_chinese() -> None:
    """Chinese sentences end without a space, so a message was one "sentence" with its question in it, written
    as 'The user said: 我暑假……可以住？.'; now the question is context, the choice a preference, courtesy dropped."""
    choice = "用户选七天（问：住宿的话有哪些连锁酒店可选？）。"
    assert rules(EXAMPLE_1_ZH) == [
        ("UserMemory", "暑假定好去广州旅", "用户暑假定好去广州旅游。"),  # the question's premise, a fact of its own
        ("LongTermMemory", "assistant: 您可以考虑 七天 全季 希尔顿 等等", "助手说：您可以考虑【七天、全季、希尔顿】等等"),
        ("UserMemory", "choice: 七天", choice),
        ("PreferenceMemory", "preference: 七天", choice),
    ]
    got = rules([
        {"role": "user", "content": "我爱你，我需要你。我对花生过敏。好的，谢谢！我不喜欢坐飞机。"},
        {"role": "user", "content": "请帮我订一张去北京的火车票。你能推荐一家餐厅吗？"},
        {"role": "assistant", "content": "你有什么饮食禁忌吗？"},
        {"role": "user", "content": "不吃辣。"},
    ])
    assert [(kind, text) for kind, _, text in got] == [
        ("PreferenceMemory", "用户爱助手。"),
        ("UserMemory", "用户需要助手。"),
        ("UserMemory", "用户对花生过敏。"),
        ("PreferenceMemory", "用户对花生过敏。"),  # a diet or an allergy is a preference too
        ("PreferenceMemory", "用户不喜欢坐飞机。"),
        ("UserMemory", "用户请助手订一张去北京的火车票。"),
        ("UserMemory", "用户请助手推荐一家餐厅。"),
        ("UserMemory", "助手问：“你有什么饮食禁忌吗？”用户答：“不吃辣”。"),
    ]
    greeting = rules([{"role": "user", "content": "你好，我是小王。我不要辣的。"}])
    assert greeting == [("UserMemory", "是小王", "用户是小王。"), ("PreferenceMemory", "preference: 辣的", "用户不要辣的。")]
    # one value at a time (a new one supersedes the old, as "lives in" does); other facts keep their own keys
    assert third_person("我住在北京。")[1] == third_person("我现在住在上海了。")[1] == "住在"
    assert third_person("我有一只猫。")[1] != third_person("我有一个妹妹。")[1]
    assert third_person("我们下周去杭州。") == ("用户说：我们下周去杭州。", "statement: 我们下周去杭州")
    assert third_person("请问酒店几点退房？")[1].startswith("question:")  # 请问 asks, it requests nothing
    assert third_person("私は東京に住んでいます。")[0] == "The user said: 私は東京に住んでいます。"  # Japanese: not Chinese rules


def test_chinese_premises_diets_and_favourites() -> None:
    got = rules([
        {"role": "user", "content": "作为素食者，我在牛排馆应该点什么？"},
        {"role": "user", "content": "我女儿下周满五岁，有什么派对的点子吗？"},
        {"role": "user", "content": "我不吃辣。我最喜欢的菜是日本料理。"},
    ])
    assert [(kind, text) for kind, _, text in got] == [
        ("UserMemory", "用户是素食者。"),
        ("PreferenceMemory", "用户是素食者。"),
        ("UserMemory", "用户女儿下周满五岁。"),
        ("PreferenceMemory", "用户不吃辣。"),
        ("UserMemory", "用户最喜欢的菜是日本料理。"),
        ("PreferenceMemory", "用户最喜欢的菜是日本料理。"),
    ]
    # a new favourite supersedes the old one: fact and preference share their keys
    later = rules([{"role": "user", "content": "我现在最喜欢的菜是川菜。"}])
    assert [title for _, title, _ in later] == [title for _, title, _ in got[-2:]]


def test_mixed_sentences_follow_their_grammar() -> None:
    """An English sentence naming Chinese dishes is English; a Chinese one naming English words is Chinese."""
    found = rules([{"role": "user", "content": "I prefer 川菜 over 粤菜. My favorite food is 火锅."},
                   {"role": "user", "content": "OK，我选七天。我叫David。"}])
    assert [text for _, _, text in found] == [
        "The user prefers 川菜 over 粤菜.", "The user's favorite food is 火锅.", "The user's favorite food is 火锅.",
        "用户选七天。", "用户选七天。", "用户叫David。",
    ]


def test_a_chinese_decision_is_a_choice() -> None:
    """"那就去京都吧" ended in 吧 and read as a question, and "好主意，" hid it: it is the user's decision."""
    found = rules([{"role": "user", "content": "好主意，那就去京都吧。不错，我选全季。"}])
    assert [(kind, text) for kind, _, text in found] == [
        ("UserMemory", "用户决定去京都。"), ("PreferenceMemory", "用户决定去京都。"),
        ("UserMemory", "用户选全季。"), ("PreferenceMemory", "用户选全季。"),
    ]


def test_chinese_relative_times_are_written_as_chinese_dates() -> None:
    items = read_messages([{"role": "user", "content": "我昨天去了长城。两周前我搬到了上海。",
                            "chat_time": "2023-05-10T10:00"}]).items
    drafts = extract_rules(plan_windows(items), FastSettings())
    assert [d.memory for d in drafts] == ["用户昨天（2023年5月9日）去了长城。",
                                          "两周前（2023年4月24日至2023年4月30日）用户搬到了上海。"]
    assert drafts[0].metadata["times"] == ["2023-05-09"] and drafts[1].metadata["times"] == ["2023-04-24/2023-04-30"]
    assert resolve_relative_times("下个月去杭州，去年在北京", "2023-05-10") == "下个月（2023年6月）去杭州，去年（2022年）在北京"


def test_a_long_reply_is_kept_whole_in_parts() -> None:
    """A reply past ``max_memory_tokens`` was cut there, and the fast window it refines is retired: days 18-40 of
    a forty-day plan were in no memory."""
    days = " ".join(f"Day {i}: museum {i}, then lunch at restaurant {i}." for i in range(1, 81))
    items = read_messages([{"role": "assistant", "content": "Here is your plan. " + days}]).items
    drafts = extract_rules(plan_windows(items), FastSettings())
    assert len(drafts) > 1 and all(d.metadata["parts"] == len(drafts) for d in drafts)
    assert [d.metadata["part"] for d in drafts] == list(range(len(drafts)))
    assert drafts[1].title.endswith(f"(part 2 of {len(drafts)})")
    assert all(d.memory.startswith("The assistant said: ") for d in drafts)
    joined = " ".join(d.memory for d in drafts)
    assert all(f"restaurant {i}." in joined for i in range(1, 81))


def test_example_1_preference_metadata() -> None:
    items = read_messages(EXAMPLE_1).items
    drafts = extract_rules(plan_windows(items), FastSettings())
    pref = next(d for d in drafts if d.memory_type == "PreferenceMemory")
    assert pref.metadata["preference_type"] == "explicit"
    assert pref.metadata["preference"] == "will choose 7 Days Inn"
    assert pref.metadata["topic"] == "7 days inn"
    assert "7 Days Inn, Ji Hotel, Hilton" in pref.metadata["context_summary"]
    assert pref.metadata["reasoning"] == "The user said: 'I’ll choose 7 Days Inn.'"
    assert pref.refines == "window:0" and pref.key == "rules:0:3"
    assert "dates" not in pref.metadata  # no chat time given
    assert pref.sources[0].content == "I’ll choose 7 Days Inn."


def test_example_3_love_is_a_preference_about_the_assistant() -> None:
    assert rules(EXAMPLE_3_LOVE) == [
        ("PreferenceMemory", "preference: the assistant", "The user loves the assistant."),
        ("UserMemory", "needs the assistant", "The user needs the assistant."),
    ]


def test_negative_preferences_and_requests() -> None:
    found = rules(
        [
            {
                "role": "user",
                "content": "I don't like spicy food. I hate waiting in lines! Can you book a table for two?",
            },
            {"role": "user", "content": "I prefer window seats because of the view."},
        ]
    )
    assert found == [
        ("PreferenceMemory", "preference: spicy food", "The user does not like spicy food."),
        ("PreferenceMemory", "preference: waiting in lines", "The user dislikes waiting in lines."),
        ("UserMemory", "request: book a table for", "The user asked the assistant to book a table for two."),
        ("PreferenceMemory", "preference: window seats", "The user prefers window seats."),
    ]


def test_overlapping_windows_extract_each_message_once() -> None:
    messages = [{"role": "user", "content": f"I live in city number {i} with my {i} cats."} for i in range(6)]
    found = rules(messages, window_tokens=25, window_overlap=1)
    assert [m for _, _, m in found] == [
        f"The user lives in city number {i} with the user's {i} cats." for i in range(6)
    ]


def test_third_person_forms() -> None:
    assert third_person("I am a teacher.") == ("The user is a teacher.", "is a teacher")
    assert third_person("I live in Berlin.") == ("The user lives in Berlin.", "lives in")
    assert third_person("I need a break") == ("The user needs a break.", "needs a break")
    assert third_person("Yesterday I went to Paris and I think I'm happy.")[0] == (
        "The user said: Yesterday the user went to Paris and the user thinks the user is happy."
    )
    # a lead-in word no longer hides what follows ("statement: actually" never superseded "lives in")
    assert third_person("Actually, I live in Paris now.") == ("The user lives in Paris now.", "lives in")
    assert third_person("Btw I started a new job.") == ("The user started a new job.", "started a new job")
    assert third_person("Also the hotel was nice.")[1] == "statement: also the hotel was"  # not about the user
    # attributes with one value at a time are keyed by the attribute, so a new value supersedes the old
    assert third_person("My name is Anna.") == ("The user's name is Anna.", "name is")
    assert third_person("my favourite colour is blue")[1] == third_person("My favourite colour is green.")[1]
    assert third_person("My sister is a nurse.")[1].startswith("statement:")  # a sister is no attribute


def test_greetings_and_assent_are_not_memories_and_a_plan_we_settle_on_is_a_choice() -> None:
    found = rules([
        {"role": "user", "content": "Hi! I'm Sam."},
        {"role": "assistant", "content": "Nice to meet you, Sam! How can I help today?"},
        {"role": "user", "content": "We're planning our wedding for next June."},
        {"role": "assistant", "content": "Congratulations! Salthill is lovely in June. Do you have a budget in mind?"},
        {"role": "user", "content": "Around 15k euros."},
        {"role": "assistant", "content": "Then Salthill fits your budget well, with venues by the sea."},
        {"role": "user", "content": "Good idea. Let's go with Salthill."},
    ])
    texts = [text for _, _, text in found]
    assert texts == [
        "The user is Sam.",
        "The user said: We're planning our wedding for next June.",  # a sentence of its own, not an answer
        "The assistant said: Congratulations! Salthill is lovely in June. Do you have a budget in mind?",
        'The user answered "Around 15k euros" when the assistant asked: "Do you have a budget in mind?"',
        "The assistant said: Then Salthill fits your budget well, with venues by the sea.",
        "The user will choose Salthill.",
        "The user will choose Salthill.",
    ]
    assert [kind for kind, _, _ in found][-2:] == ["UserMemory", "PreferenceMemory"]


def test_a_questions_premise_is_kept_and_a_question_is_never_a_fact() -> None:
    """"As a vegan, what should I order?" says the user is vegan; "I wonder, what is ...?" says nothing."""
    found = rules([
        {"role": "user", "content": "As a vegan, what should I order at a steakhouse?"},
        {"role": "user", "content": "My daughter Mia turns 5 in two weeks, any party ideas?"},
        {"role": "user", "content": "I wonder, what is the capital of France? My question is, how do I reset it?"},
        {"role": "user", "content": "Can you book a table for two?"},
    ])
    assert [(kind, text) for kind, _, text in found] == [
        ("UserMemory", "The user is vegan."),
        ("PreferenceMemory", "The user is vegan."),
        ("UserMemory", "The user's daughter Mia turns 5 in two weeks."),
        ("UserMemory", "The user asked the assistant to book a table for two."),
    ]


def test_a_named_speaker_is_named_and_keyed_apart() -> None:
    """A group chat's speakers share one user id: "Alice lives in Boston", not "The user", and Bob's home never
    shares a key with Alice's; a name is text, never a pattern ("A\\1")."""
    found = rules([
        {"role": "user", "name": "Alice", "content": "I live in Boston. I love jazz."},
        {"role": "user", "name": "Bob", "content": "I live in Seattle."},
        {"role": "user", "name": "小王", "content": "我对花生过敏。"},
        {"role": "user", "name": "A\\1", "content": "My dog is old."},
        {"role": "user", "name": "Bob", "content": "Mine:\n```\nprint('the user 用户')\n```"},
    ])
    assert [text for _, _, text in found] == [
        "Alice lives in Boston.", "Alice loves jazz.", "Bob lives in Seattle.", "小王对花生过敏。", "小王对花生过敏。",
        "A\\1's dog is old.", 'Bob shared code ("Mine"):\n```\nprint(\'the user 用户\')\n```',  # code verbatim
    ]
    keys = [title for _, title, _ in found]
    assert keys[0] == "lives in [Alice]" and keys[2] == "lives in [Bob]"


def test_two_named_people_chatting_give_their_facts_not_their_reactions() -> None:
    """LoCoMo-like chats: both sides named; greetings and reactions ("Sorry to hear that!") are not memories."""
    found = rules([
        {"role": "assistant", "name": "Gina", "content": "Hey Jon! Good to see you. What's up?"},
        {"role": "user", "name": "Jon", "content": "Hey Gina! I wanna start a dance studio."},
        {"role": "assistant", "name": "Gina", "content": "I also lost my job at Door Dash this month, sadly."},
        {"role": "user", "name": "Jon", "content": "Sorry to hear that! Yeah, definitely! That must've been hard."},
    ])
    assert [text for _, _, text in found] == [
        "Jon wants to start a dance studio.",
        "Gina said: I also lost my job at Door Dash this month, sadly.",
    ]


def test_moving_somewhere_is_where_the_user_lives_now() -> None:
    """"I moved to Paris" supersedes "I live in Berlin" (one key), "I moved to a new desk" does not."""
    assert third_person("I just moved to Paris.")[1] == third_person("I live in Berlin.")[1] == "lives in"
    assert third_person("I moved to a new desk.")[1] != "lives in"
    assert third_person("两周前我搬到了上海。")[1] == third_person("我住在北京。")[1] == "住在"


def test_code_is_kept_whole_and_list_items_read_as_sentences() -> None:
    """A fenced block was one "sentence" per line ("The user said: port: 8080.") and its words were put in
    the third person; now it is one memory, verbatim, with the sentence that introduced it."""
    text = ("My project uses Postgres 15. Here is my config:\n```yaml\nserver:\n  port: 8080  # my port\n```\n"
            "- I prefer tabs over spaces\n- My team has 5 engineers")
    found = [text for _, _, text in rules([{"role": "user", "content": text}])]
    assert found == [
        'The user shared yaml ("Here is my config"):\n```yaml\nserver:\n  port: 8080  # my port\n```',
        "The user's project uses Postgres 15.",
        "The user prefers tabs over spaces.",
        "The user's team has 5 engineers.",
    ]


def test_lead_in_labels_praise_and_pronoun_objects() -> None:
    """"Quick one: I'm ..." is the user's sentence; "Great goal!" is courtesy; "I love it" prefers nothing."""
    found = rules([
        {"role": "user", "content": "Quick one: I'm training for the Berlin marathon. PS: I love it."},
        {"role": "assistant", "content": "Great goal! How many weeks until race day?"},
    ])
    assert [(kind, text) for kind, _, text in found] == [
        ("UserMemory", "The user is training for the Berlin marathon."),
        ("UserMemory", "The user loves it."),
    ]


def test_standing_instructions_and_shared_subjects_are_preferences() -> None:
    """"Don't use pandas" and "Always write tests" are how the user wants the assistant to work; "I use Python
    and prefer type hints" prefers type hints (the second verb took its "I" from the first)."""
    found = rules([{"role": "user", "content": "I use Python 3.11 and prefer type hints. Don't use pandas, we use "
                                               "polars. Always write tests with pytest. Please keep answers short."}])
    assert [(kind, text) for kind, _, text in found] == [
        ("UserMemory", "The user uses Python 3.11."),
        ("PreferenceMemory", "The user prefers type hints."),
        ("PreferenceMemory", "The user does not want the assistant to use pandas."),
        ("PreferenceMemory", "The user wants the assistant to always write tests with pytest."),
        ("UserMemory", "The user asked the assistant to keep answers short."),
    ]


def test_the_users_verbs_in_the_third_person() -> None:
    """Irregular pasts stay past, adverbs keep their verb conjugated, contractions without an apostrophe read."""
    cases = {
        "I swam in the lake.": "The user swam in the lake.",
        "I flew to Rome and I taught piano.": "The user flew to Rome and the user taught piano.",
        "I never smoke.": "The user never smokes.",
        "I also like tea.": "The user also likes tea.",
        "I just bought a car.": "The user just bought a car.",
        "I saw a movie.": "The user saw a movie.",
        "I read novels.": "The user reads novels.",
        "I read a novel yesterday.": "The user read a novel yesterday.",
        "I dont eat meat.": "The user does not eat meat.",
        "I study French.": "The user studies French.",
        "I and my wife went to Rome.": "The user and the user's wife went to Rome.",
        "I think I never really liked it.": "The user thinks the user never really liked it.",
        "I vlog every day.": "The user vlogs every day.",
        "Lost my job yesterday.": "The user lost the user's job yesterday.",  # chat drops the "I"
        "Just bought a new car!": "The user just bought a new car!",
        "Used cars are cheap.": "The user said: Used cars are cheap.",  # "used" is an adjective too
    }
    assert {said: third_person(said)[0] for said in cases} == cases


def test_relative_times_resolve_against_chat_time() -> None:
    assert parse_chat_time("1:56 pm on 8 May, 2023").isoformat() == "2023-05-08"  # type: ignore[union-attr]
    assert parse_chat_time("2024-07-20T10:00:00Z").isoformat() == "2024-07-20"  # type: ignore[union-attr]
    assert parse_chat_time("sometime") is None
    text = resolve_relative_times("I went there yesterday and go again next month.", "1:56 pm on 8 May, 2023")
    assert text == "I went there yesterday (7 May 2023) and go again next month (June 2023)."
    found = rules([{"role": "user", "content": "I visited my mom yesterday.", "chat_time": "2023-03-01"}])
    assert found[0][2] == "The user visited the user's mom yesterday (28 February 2023)."
    text = resolve_relative_times("Last Saturday I ran; two weeks ago I swam.", "1:56 pm on 8 May, 2023")
    assert text == "Last Saturday (6 May 2023) I ran; two weeks ago (24 April 2023 to 30 April 2023) I swam."


def test_without_a_readable_chat_time_relative_times_resolve_against_the_recorded_add() -> None:
    messages = [{"role": "user", "content": "I visited my mom yesterday."},
                {"role": "user", "content": "I swam last Saturday.", "chat_time": "sometime"},
                {"role": "user", "content": "I ran yesterday.", "chat_time": "2023-01-10"}]
    items = read_messages(messages, recorded_at="2023-03-01T09:00:00+00:00").items
    texts = [d.memory for d in extract_rules(plan_windows(items), FastSettings())]
    assert texts == ["The user visited the user's mom yesterday (28 February 2023).",
                     "The user swam last Saturday (25 February 2023).", "The user ran yesterday (9 January 2023)."]
    assert [i.source.chat_time for i in items] == [None, "sometime", "2023-01-10"]  # the sources say what was given


def test_memories_carry_their_absolute_times() -> None:
    items = read_messages(
        [{"role": "user", "content": "I went to a support group yesterday.", "chat_time": "8 May, 2023"}]
    ).items
    (draft,) = extract_rules(plan_windows(items), FastSettings())
    assert draft.metadata["dates"] == ["2023-05-08"]
    assert draft.metadata["times"] == ["2023-05-07"] and draft.metadata["time_expressions"] == ["yesterday"]
