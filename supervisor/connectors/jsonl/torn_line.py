"""Telling what a crash leaves of a JSON line from bytes some other program wrote.

The jsonl sink cuts a torn last line on open. Cutting is only safe if the bytes
are its own: a line `Codec.dump_lines` started, cut anywhere (even inside a UTF-8
character), perhaps followed by zeros where a power cut left blocks allocated but
never written. Anything else (a config file's last line, a log line) means the
sink was pointed at a file that is not its output, and the bytes are left alone.
"""

from __future__ import annotations

import re

_STRING_BODY = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*'
_STRING = re.compile(rf'"{_STRING_BODY}"')
_STRING_CUT = re.compile(rf'"{_STRING_BODY}(?:\\(?:u[0-9a-fA-F]{{0,3}})?)?\Z')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_CUT = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?)?\Z")
_LITERALS = ("true", "false", "null")
_CLOSE = {"{": "}", "[": "]"}


def is_torn_json_line(tail: bytes) -> bool:
    """Whether `tail`, the bytes after a file's last newline, can be what a crash left
    of a compact JSON line: a prefix of one JSON document, then perhaps zeros."""
    data = tail.rstrip(b"\0")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            return False
        text = data[: exc.start].decode()  # a character cut short at the very end
    return is_json_prefix(text)


def is_json_prefix(text: str) -> bool:
    """Whether some ending makes `text` one compact JSON document (no whitespace
    between tokens, as `Codec.dump_lines` writes). A whole document counts."""
    stack: list[str] = []
    expect = "value"  # value | key | colon | after
    may_close = False  # just after "{" or "[": the empty container may close
    pos, end = 0, len(text)
    while pos < end:
        char = text[pos]
        if expect == "colon":
            if char != ":":
                return False
            pos, expect = pos + 1, "value"
            continue
        if expect == "after":
            if not stack:
                return False  # a second document on one line
            if char == ",":
                pos, expect = pos + 1, "key" if stack[-1] == "{" else "value"
            elif char == _CLOSE[stack[-1]]:
                stack.pop()
                pos += 1
            else:
                return False
            continue
        if may_close and stack and char == _CLOSE[stack[-1]]:
            stack.pop()
            pos, expect, may_close = pos + 1, "after", False
            continue
        may_close = False
        if char == '"':
            string = _STRING.match(text, pos)
            if string is None:
                return _STRING_CUT.match(text, pos) is not None
            pos, expect = string.end(), "colon" if expect == "key" else "after"
        elif expect == "key":
            return False
        elif char in _CLOSE:
            stack.append(char)
            pos, expect, may_close = pos + 1, "key" if char == "{" else "value", True
        elif char == "-" or (char.isascii() and char.isdigit()):
            number = _NUMBER.match(text, pos)
            if number is None or (number.end() < end and text[number.end()] in ".eE+-"):
                return _NUMBER_CUT.match(text, pos) is not None
            pos, expect = number.end(), "after"
        else:
            rest = text[pos : pos + 5]
            literal = next((word for word in _LITERALS if text.startswith(word, pos)), None)
            if literal is None:
                return any(word.startswith(rest) for word in _LITERALS) and pos + 5 > end
            pos, expect = pos + len(literal), "after"
    return True
