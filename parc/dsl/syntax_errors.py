"""Turns lark's parse errors into sentences: what was expected, what was found, what is open."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lark import Lark
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from .ast import Span
from .diagnostics import Diagnostic

REGEX_TERMINALS = {
    "NAME": "a name",
    "INT": "an integer",
    "SIGNED_INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "QUANTITY": "a number with a unit",
    "PATTERN": "a name pattern",
    "SCHEDULE_NAME": "a schedule name",
    "SBP_S": "`S(dim)`",
    "SBP_B": "`B`",
    "SBP_P": "`P`",
}
EXPRESSION_START = {"INT", "FLOAT", "STRING", "NAME", "TRUE", "FALSE", "LPAR", "LSQB", "MINUS"}
STATEMENT_START = {"INPUT", "PARAM", "FOR", "OUTPUT", "RETURN"}
ITEM_START = {"USE", "HARDWARE", "DEF", "MODEL", "TRAIN", "PARALLEL"}
PARALLEL_START = {"MESH", "SBP", "STAGES", "STAGE", "SCHEDULE", "AUTO"}
NOISE = {"PLUS", "MINUS", "STAR", "SLASH", "DOT", "AS", "LPAR", "QUANTITY", "COMMA"}
TOP_LEVEL_WORDS = {"use", "hardware", "def", "model", "train", "parallel"}


@dataclass(frozen=True)
class OpenBlock:
    bracket: str  # "{", "(" or "["
    header: str
    line: int
    col: int


def open_blocks(text: str, upto: int) -> list[OpenBlock]:
    """The brackets still open at character offset `upto`, outermost first."""
    stack: list[OpenBlock] = []
    line, line_start, i = 1, 0, 0
    while i < min(upto, len(text)):
        ch = text[i]
        if ch == "\n":
            line, line_start = line + 1, i + 1
        elif ch == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif ch == '"':
            i += 1
            while i < len(text) and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif ch == "{":
            header = re.split(r"[({]", text[line_start:i], maxsplit=1)[0]
            header = " ".join(header.split())[:40] or "block"
            stack.append(OpenBlock("{", header, line, i - line_start + 1))
        elif ch in "([":
            stack.append(OpenBlock(ch, ch, line, i - line_start + 1))
        elif ch in ")]}":
            opener = {")": "(", "]": "[", "}": "{"}[ch]
            while stack and stack[-1].bracket != opener and ch == "}":
                stack.pop()  # an unclosed ( or [ inside a block ends with the block
            if stack and stack[-1].bracket == opener:
                stack.pop()
        i += 1
    return stack


def _words_for(terminals: set[str], lark: Lark) -> list[str]:
    names = set(terminals)
    phrases: list[str] = []
    if len(names & ITEM_START) >= 3:
        names -= ITEM_START
        phrases.append("a top-level item (`use`, `hardware`, `def`, `model`, `train`, `parallel`)")
    if len(names & STATEMENT_START) >= 3:
        names -= STATEMENT_START | {"NAME"}
        phrases.append("a statement")
    if len(names & PARALLEL_START) >= 3:
        names -= PARALLEL_START | {"NAME"}
        phrases.append("a `parallel` statement (`mesh`, `sbp`, `stages`, `stage`, `schedule`, "
                       "or a setting)")
    if {"INT", "NAME", "LPAR"} <= names:
        names -= EXPRESSION_START
        phrases.append("an expression")
    if len(names - NOISE) > 0 and phrases + [n for n in names if n not in NOISE]:
        names -= NOISE
    literal: list[str] = []
    for name in sorted(names):
        if name in REGEX_TERMINALS:
            phrases.append(REGEX_TERMINALS[name])
            continue
        try:
            pattern = lark.get_terminal(name).pattern
        except KeyError:
            continue
        if isinstance(pattern, PatternStr):
            literal.append(f"`{pattern.value}`")
    return phrases + sorted(set(literal))


def _join(words: list[str]) -> str:
    words = list(dict.fromkeys(words))
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _found(token) -> str:
    if token.type == "$END":
        return "end of file"
    if token.type == "NAME":
        return f"name `{token}`"
    if token.type in ("INT", "FLOAT", "SIGNED_INT"):
        return f"number `{token}`"
    if token.type == "STRING":
        return f"string {token}"
    return f"`{token}`"


def _end_span(text: str, file: str) -> Span:
    stripped = text.rstrip()
    line = stripped.count("\n") + 1
    col = len(stripped) - (stripped.rfind("\n") + 1) + 1
    return Span(file, line, col, line, col + 1)


def describe_syntax_error(exc: UnexpectedInput, text: str, file: str, lark: Lark) -> Diagnostic:
    if isinstance(exc, UnexpectedCharacters):
        span = Span(file, exc.line, exc.column, exc.line, exc.column + 1)
        char = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else "?"
        if char == '"':
            return Diagnostic("E003", "unterminated string", span,
                              help='close the string with `"` on the same line')
        return Diagnostic("E001", f"unexpected character `{char}`", span)

    if isinstance(exc, UnexpectedEOF):
        token_type, expected = "$END", set(exc.expected)
    else:
        assert isinstance(exc, UnexpectedToken)
        token_type, expected = exc.token.type, set(exc.expected)

    at_end = token_type == "$END"
    if at_end:
        span = _end_span(text, file)
        offset = len(text)
    else:
        token = exc.token
        span = Span(file, token.line, token.column, token.end_line or token.line,
                    token.end_column or token.column + 1)
        offset = token.start_pos or 0
    found = "end of file" if at_end else _found(exc.token)
    opened = open_blocks(text, offset)
    blocks = [b for b in opened if b.bracket == "{"]
    innermost = blocks[-1] if blocks else None
    found_word = "" if at_end else str(exc.token)
    found_item = found_word in TOP_LEVEL_WORDS and exc.token.column == 1

    if innermost and "RBRACE" in expected and (at_end or found_item):
        message = (f"expected `}}` to close `{innermost.header}` opened at "
                   f"{innermost.line}:{innermost.col}, found {found}")
        return Diagnostic("E004", message, span)
    if opened and opened[-1].bracket in "([" and not found_item:
        closer = {"(": ("RPAR", ")"), "[": ("RSQB", "]")}[opened[-1].bracket]
        later = at_end or exc.token.line > opened[-1].line
        if closer[0] in expected and (later or token_type in ("RBRACE", "$END")):
            bracket = opened[-1]
            message = (f"expected `{closer[1]}` to close `{bracket.bracket}` opened at "
                       f"{bracket.line}:{bracket.col}, found {found}")
            return Diagnostic("E004", message, span)
    history = getattr(exc, "token_history", None) or []
    if innermost and found_word not in TOP_LEVEL_WORDS and history:
        previous = history[-1]
        if str(previous) in TOP_LEVEL_WORDS and previous.type == "NAME":
            found_word = str(previous)
            span = Span(file, previous.line, previous.column, previous.line,
                        previous.column + len(found_word))
    if innermost and found_word in TOP_LEVEL_WORDS:
        message = (f"`{found_word}` belongs at the top level, not inside `{innermost.header}` "
                   f"opened at {innermost.line}:{innermost.col}")
        return Diagnostic("E005", message, span)
    message = f"expected {_join(_words_for(expected, lark))}, found {found}"
    help_text = None
    if at_end and innermost:
        help_text = f"`{innermost.header}` opened at {innermost.line}:{innermost.col} is not closed"
    elif token_type == "RBRACE" and not blocks:
        help_text = "this `}` closes nothing"
    return Diagnostic("E002", message, span, help=help_text)
