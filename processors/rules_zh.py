"""Offline rules for Chinese sentences (pure): the user's words in the third person, questions, requests, choices,
preferences and courtesy, so that a Chinese add in fine mode keeps Chinese memories ("用户选七天。")."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["answer_zh", "asked_zh", "assistant_zh", "is_chinese", "is_filler_zh", "preference_zh", "pronouns_zh",
           "strip_interjection_zh", "third_person_zh"]

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA_HANGUL = re.compile(r"[\u3040-\u30ff\u1100-\u11ff\uac00-\ud7af]")
_END = "。！？!?.…"
_FILLER = re.compile(
    r"^(?:好的?|好吧|行|嗯+|哦+|噢+|谢谢(?:你|您)?(?:了|啦)?|多谢|感谢|没问题|不客气|收到|明白了?|知道了|懂了|ok|OK)"
    r"[，,。！!～~\s]*$"
    r"|^(?:有(?:其他|任何|什么)?(?:问题|需要)|随时|欢迎再|祝(?:你|您)|不客气)"
)
_INTERJECTION = re.compile(
    r"^(?:(?:好的?|好吧|好啊|好主意|好想法|不错|可以|嗯+|哦+|噢+|谢谢(?:你|您)?|多谢|没问题|收到|明白了?|知道了|对|是的?|行吧?|"
    r"你好|您好|嗨|哈喽|早上好|晚上好)"
    r"[，,！!。\s]+)+"
)
_LATIN = re.compile(r"[A-Za-z]+")
_MOVED_ZH = re.compile(r"^(?:刚|已经|最近)?(?:搬到|搬去|搬家到)了?")
_LEAD = re.compile(r"^[^我你您，,。！？!?]{0,8}?我(?!们)")
"""A sentence about the user: 我 first, or after a short time or place ("两周前我……", "在公司我……")."""
_SINGLE = re.compile(r"^(?:现在|目前)?(住在|叫|名字是|来自|今年|的生日是|的邮箱是|的电话是|的手机号是|最喜欢的[^是]{1,8}是)")
"""Attributes with one value at a time: their key is the attribute, so "我住在上海" supersedes "我住在北京"."""
_QUESTION = re.compile(r"(?:[？?]|[吗呢吧嘛][。]?)$")
_REQUEST = re.compile(r"^(?:请(?!问)(?:你|您)?(?:帮我)?|帮我|麻烦(?:你|您)?|(?:你|您)(?:能|可以|能不能)(?:帮我)?)(?P<rest>.+)$")
_PREFS = (
    (re.compile(r"^我(?:现在|目前)?最喜欢的(?P<what>[^是]{1,8})是(?P<obj>.+)$"), "'s favorite {what} is", "positive"),
    (re.compile(r"^我(?:是|吃)(?P<obj>(?:纯|全)?素(?:食者|食主义者)?)$"), "is", "positive"),
    (re.compile(r"^我(?P<obj>对.+过敏)"), "is", "positive"),
    (re.compile(r"^我(?:不吃|不能吃|不喝|不能喝|忌口)(?P<obj>.+)$"), "does not eat", "negative"),
    (re.compile(r"^我(?:真的|也|还是)?(?:不(?:太|怎么)?喜欢|讨厌|不爱|受不了|不想要?|不要)(?P<obj>.+)$"), "dislikes",
     "negative"),
    (re.compile(r"^我(?:就|还是|最后|决定|打算)?(?:选择|选|挑|订)(?:了)?(?P<obj>.+)$"), "will choose", "positive"),
    (re.compile(r"^(?:那|那么)?(?:我们|咱们)?(?:就|决定)(?P<obj>(?:去|选|订|要|买|住)[^，,。！？]+?)吧?$"), "will choose",
     "positive"),
    (re.compile(r"^我(?:更|比较|最|很|非常|特别|也|真的)?(?:喜欢|偏好|偏爱|倾向于?|爱)(?P<obj>.+)$"), "prefers", "positive"),
)


def is_chinese(text: str) -> bool:
    """Whether ``text`` is written in Chinese: Han characters and no kana or Hangul (Japanese, Korean), and
    either a Han character before any Latin letter ("我叫David") or Han characters more than twice the Latin
    words ("I prefer 川菜 over 粤菜" is English with Chinese names in it)."""
    han = _HAN.search(text)
    if han is None or _KANA_HANGUL.search(text) is not None:
        return False
    latin = _LATIN.search(text)
    if latin is None or han.start() < latin.start():
        return True
    return len(_HAN.findall(text)) > 2 * len(_LATIN.findall(text))


def strip_interjection_zh(sentence: str) -> str:
    """``sentence`` without the courtesy it opens with ("好的，我选七天" -> "我选七天")."""
    return _INTERJECTION.sub("", sentence.strip(), count=1)


def is_filler_zh(sentence: str) -> bool:
    """Whether ``sentence`` is courtesy alone ("好的，谢谢！")."""
    rest = strip_interjection_zh(sentence)
    return not rest or _FILLER.match(rest) is not None


def pronouns_zh(text: str) -> str:
    """The user's words in the third person: 我 -> 用户, 你/您 -> 助手 (我们 and 你们 stay)."""
    text = re.sub(r"我(?!们)", "用户", text)
    return re.sub(r"[你您](?![们好])", "助手", text)


def _finish(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in _END else text + "。"


def _key(text: str, limit: int = 8) -> str:
    return re.sub(r"[\s。！？!?，,、；;：:“”\"'（）()]+", "", text)[:limit]


def third_person_zh(sentence: str) -> tuple[str, str]:
    """``sentence`` (a user's words) in the third person, and a key naming what it is about (the English
    rules' protocol: "question:", "request:" and "statement:" keys for what is not a fact about the user)."""
    text = sentence.strip()
    request = _REQUEST.match(text)
    if request and not text.startswith(("你是", "您是")):
        rest = pronouns_zh(request.group("rest")).rstrip(_END + "吗")
        return f"用户请助手{rest}。", "request: " + _key(rest)
    if _QUESTION.search(text):
        return f"用户问：{pronouns_zh(text)}", "question: " + _key(text)
    lead = _LEAD.match(text)
    if lead:  # "我搬到了上海", "两周前我搬到了上海"
        rest = text[lead.end():]
        single = _SINGLE.match(rest)  # one value at a time: a new one supersedes the old, as "lives in" does
        if _MOVED_ZH.match(rest):  # "我搬到了上海" is where the user lives now
            return _finish(pronouns_zh(text)), "住在"
        return _finish(pronouns_zh(text)), single.group(1) if single else _key(rest)
    return f"用户说：{_finish(pronouns_zh(text))}", "statement: " + _key(text)


def preference_zh(sentence: str) -> tuple[str, str, str] | None:
    """(verb, object, polarity) of a choice or preference ("我选七天" -> will choose 七天), or None."""
    text = sentence.strip().rstrip(_END)
    for pattern, verb, polarity in _PREFS:
        match = pattern.match(text)
        if match:
            obj = re.split(r"[，,；;]|因为|但是", match.group("obj"), maxsplit=1)[0].strip()
            if obj:
                return verb.format(**{k: v for k, v in match.groupdict().items() if v}), obj, polarity
    return None


def asked_zh(questions: Sequence[str]) -> str:
    """'（问：……）' naming the question a choice answers, or ''."""
    if not questions:
        return ""
    return f"（问：{pronouns_zh(questions[-1]).rstrip(_END)}？）"


def answer_zh(reply: str, prompt: str) -> str:
    """The memory of a Chinese reply to the assistant's question."""
    return f"助手问：“{prompt}”用户答：“{reply.strip().rstrip(_END)}”。"


def assistant_zh(body: str) -> str:
    """The memory of a Chinese assistant message."""
    return f"助手说：{body}"
