"""The one JSON reader for every door: strict RFC 8259, bounded nesting, one error type.

Every text that comes from outside (WebSocket frames, REST and Pusher bodies, signed webhooks,
push-queue messages, token headers and payloads, authorizer contexts) is parsed with
:func:`loads`. It accepts exactly the documents that the service can also encode again, so
nothing read at a door can fail later on its way out (``json.dumps(..., allow_nan=False)``, or
UTF-8 encoding of a reply), and nothing makes Python recurse without bound. It refuses:

* the non-standard constants ``NaN``, ``Infinity``, ``-Infinity`` (RFC 8259 §6: "Numeric
  values that cannot be represented ... such as Infinity and NaN are not permitted");
* numbers that overflow a double to ±infinity (``1e400``), and integers longer than Python
  converts (4300 digits, ``sys.get_int_max_str_digits``);
* lone surrogates (``"\\ud800"``, or a raw surrogate in a ``str`` input), in strings and in
  member names: they are not Unicode scalar values and cannot be encoded as UTF-8 (RFC 8259
  §8.2 leaves their handling to the parser; RFC 7493 (I-JSON) §2.1 forbids them);
* duplicate member names in an object (RFC 8259 §4 says names "SHOULD be unique"; RFC 7493
  §2.3 requires it, and RFC 8725 §3.5 asks JWT parsers to refuse them);
* arrays and objects nested deeper than :data:`MAX_DEPTH` levels, found by a linear scan
  *before* the parser recurses, so ``RecursionError`` never escapes;
* ``bytes`` that are not UTF-8 (RFC 8259 §8.1).

Every refusal is a :class:`JSONRejected` (a ``ValueError``) whose ``reason`` is short and never
contains the input. This module is pure: no I/O, no AWS SDK.
"""
from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any, Dict, List, Optional

#: deepest nesting of arrays and objects accepted (the top-level value counts as level 1).
#: Far above any payload this service carries, far below Python's recursion limit (1000).
MAX_DEPTH = 64

#: JSON strings (escapes included), or an unterminated one running to the end of the text
#: (possessive loop: linear time whatever the input)
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class JSONRejected(ValueError):
    """A text refused by :func:`loads`.

    Attributes:
        reason: what is wrong, in a few words (never the input itself).
        document: the value parsed despite the fault, for faults found in values of a
            syntactically valid document (overflowing numbers, ``NaN``, lone surrogates,
            duplicate names; members whose name is duplicated are left out, as their value is
            ambiguous); None for syntax errors, undecodable bytes and excessive nesting.
            Callers may read a correlation id from it to address their error reply, never act
            on it otherwise.
    """

    def __init__(self, reason: str, document: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.document = document


def _depth_exceeds(text: str, max_depth: int) -> Optional[str]:
    """Why ``text`` may not be handed to the recursive parser, or None when it may.

    Cheap first: nesting depth is at most the number of opening brackets. Otherwise strings are
    cut out, everything but brackets dropped, and the running depth of what is left computed in
    one linear pass. A closing bracket of the wrong kind only lowers the count; the parser
    stops there with a syntax error, so it never recurses deeper than the count.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return None
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if skeleton and max(accumulate(map(_DEPTH_STEP.__getitem__, skeleton))) > max_depth:
        return f"arrays and objects nested deeper than {max_depth} levels"
    return None


def _may_hold_surrogates(text: str) -> bool:
    """True when ``text`` has a surrogate escape (``\\uD8..``-``\\uDF..``, or a false alarm such
    as ``\\\\uD800``) or a raw surrogate: only then are the parsed strings walked."""
    return ("\\ud" in text or "\\uD" in text
            or (not text.isascii() and _SURROGATE.search(text) is not None))


def _has_lone_surrogate(value: Any) -> bool:
    """True when a string or member name anywhere in ``value`` holds a surrogate code point
    (the decoder joins valid pairs, so any left is lone). Depth is already bounded."""
    stack: List[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class _Fault(Exception):
    """A value-level fault found while parsing (internal: becomes a JSONRejected)."""


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _Fault("a number is out of range")
    return number


def _no_constant(name: str) -> Any:
    raise _Fault("NaN and Infinity are not JSON")


def _unique_members(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Fault("duplicate JSON member name")
    return obj


_strict_decode = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant,
                                  object_pairs_hook=_unique_members).decode


def _unambiguous_members(pairs: list) -> dict:
    counts: Dict[str, int] = {}
    for name, _ in pairs:
        counts[name] = counts.get(name, 0) + 1
    return {name: value for name, value in pairs if counts[name] == 1}


#: a decoder taking ``NaN`` and infinities, and leaving out every member whose name is
#: duplicated (its value is ambiguous); only used for :attr:`JSONRejected.document`
_lenient_decode = json.JSONDecoder(object_pairs_hook=_unambiguous_members).decode


def loads(data: Any, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON text strictly (see the module docstring for every rule).

    Args:
        data: ``str``, or ``bytes``/``bytearray`` holding UTF-8.
        max_depth: deepest nesting accepted (default :data:`MAX_DEPTH`).
    Returns:
        the value: ``dict``, ``list``, ``str``, ``int``, finite ``float``, ``bool`` or None.
    Raises:
        JSONRejected: (a ``ValueError``) for anything else; ``reason`` says why.
    """
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONRejected("not UTF-8") from None
    elif isinstance(data, str):
        text = data
    else:
        raise JSONRejected("not a JSON text")
    too_deep = _depth_exceeds(text, max_depth)
    if too_deep:
        raise JSONRejected(too_deep)
    try:
        value = _strict_decode(text)
    except _Fault as fault:  # parse it again to keep its values, if the rest is valid syntax
        try:
            document = _lenient_decode(text)
        except json.JSONDecodeError as err:  # a syntax error after the fault: that one counts
            raise JSONRejected(f"not valid JSON: {err.msg} at character {err.pos}") from None
        except ValueError:  # an integer over Python's digit limit after the fault
            raise JSONRejected("a number has too many digits") from None
        raise JSONRejected(str(fault), document=document) from None
    except json.JSONDecodeError as err:
        raise JSONRejected(f"not valid JSON: {err.msg} at character {err.pos}") from None
    except ValueError:  # an integer over Python's digit limit
        raise JSONRejected("a number has too many digits") from None
    except RecursionError:  # unreachable after the depth scan; kept as a last guard
        raise JSONRejected(f"arrays and objects nested deeper than {max_depth} levels") \
            from None
    if _may_hold_surrogates(text) and _has_lone_surrogate(value):
        raise JSONRejected("a string holds a lone surrogate", document=value)
    return value
