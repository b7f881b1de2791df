"""How deeply JSON from a client may nest, and the check, shared by the socket and HTTP.

No message or body the service reads nests more than four levels; 16 leaves room. A deeper
value is refused before anything walks it, because Python code that walks JSON (the standard
encoder, the record's canonical form, orjson's encoder at 254 levels) fails or recurses on deep
values. The check itself is a loop, never recursion, so no depth makes it fail.
"""

from __future__ import annotations

from typing import Any

MAX_JSON_DEPTH = 16


def deeper_than(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when `value` (parsed JSON) has more than `limit` levels of arrays and objects.

    A scalar is depth 0; `[]` and `{}` are depth 1.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False
