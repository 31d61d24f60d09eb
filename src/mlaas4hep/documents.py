"""The one reader of user-supplied YAML and JSON documents, hardened against hostile input.

Every spec, metadata file, upload and request body that a user controls is parsed here, so
the limits hold everywhere (the design brief's "no YAML anchors/aliases"):

- size: the caller's byte limit is checked before any parsing (``PayloadTooLarge``);
- YAML anchors, aliases and merge keys (``&a``, ``*a``, ``<<:``) are refused while the
  document is *composed*, before anything is expanded or constructed: an alias bomb (a few
  hundred bytes that expand to billions of nodes) therefore costs nothing;
- nesting depth is capped (``MAX_DEPTH``, 64) for YAML and JSON alike: the YAML composer
  stops at the first node that is too deep, and JSON is parsed by orjson (C, no Python
  recursion, its own hard limit of 1024) and then measured with an explicit stack, so a
  list nested 100,000 deep is a ``DocumentError`` and never a ``RecursionError``.

Parsing time and memory are linear in the (capped) input size. Refusals raise
:class:`~mlaas4hep.errors.DocumentError` (a ``SpecError``).
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from yaml.nodes import Node

from mlaas4hep.errors import DocumentError, PayloadTooLarge

__all__ = ["MAX_DEPTH", "DocumentError", "check_depth", "load_json", "load_yaml"]

#: The deepest nesting of lists/mappings accepted in any user document.
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_yaml(data: bytes | str, *, what: str, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse *data* as YAML (JSON is YAML) with the limits of this module.

    Args:
        data: the document (bytes must be UTF-8).
        what: names the document in error messages ("the spec", "'job.yaml'").
        limit: the largest accepted size in bytes.
        max_depth: the deepest accepted nesting of lists and mappings.

    Raises:
        PayloadTooLarge: over *limit* bytes.
        DocumentError: not UTF-8, not YAML, anchors/aliases/merge keys, or too deep.
    """
    text = _text(data, what=what, limit=limit)
    if text.lstrip().startswith(("{", "[")):
        # JSON is the common case and orjson is ~100x faster than the YAML parser; a flow
        # YAML document that is not JSON falls through to the YAML parser below.
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if "depth" in str(exc) or "recursion" in str(exc):  # orjson stops at 1024
                raise DocumentError(_too_deep(what, max_depth)) from exc
        else:
            check_depth(value, what=what, max_depth=max_depth)
            return value
    loader = None
    try:
        # The reader refuses control characters (NUL...) already in the constructor.
        loader = _StrictLoader(text, what=what, max_depth=max_depth)
        return loader.get_single_data()
    except DocumentError:
        raise
    except yaml.YAMLError as exc:
        raise DocumentError(yaml_error_message(exc, text, what)) from exc
    except (ValueError, OverflowError, RecursionError) as exc:
        # e.g. an integer of more than 4300 digits (int_max_str_digits), a date out of range
        msg = f"{what} has a value that cannot be read: {str(exc)[:200]}"
        raise DocumentError(msg) from exc
    finally:
        if loader is not None:
            loader.dispose()


def load_json(data: bytes | str, *, what: str, limit: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse *data* as JSON with the size and depth limits of this module.

    Raises:
        PayloadTooLarge: over *limit* bytes.
        DocumentError: not JSON (the parser's message says where), or nested too deep.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        msg = f"{what} is {size} bytes; the limit is {limit} bytes"
        raise PayloadTooLarge(msg)
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):  # orjson stops at 1024
            raise DocumentError(_too_deep(what, max_depth)) from exc
        msg = f"{what} is not valid JSON: {exc}"
        raise DocumentError(msg) from exc
    check_depth(value, what=what, max_depth=max_depth)
    return value


def check_depth(value: Any, *, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse *value* if its lists/dicts nest deeper than *max_depth* (iterative walk).

    Raises:
        DocumentError: naming the limit.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise DocumentError(_too_deep(what, max_depth))
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _text(data: bytes | str, *, what: str, limit: int) -> str:
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > limit:
        msg = f"{what} is {size} bytes; the limit is {limit} bytes"
        raise PayloadTooLarge(msg)
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"{what} is not UTF-8 text; send YAML or JSON"
        raise DocumentError(msg) from exc


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def yaml_error_message(exc: yaml.YAMLError, text: str, what: str) -> str:
    """PyYAML's error in the user's terms: the document's name (never ``<unicode string>``),
    line and column, the offending line with a caret, and a hint for the usual mistakes."""
    head = f"{what} is not valid YAML/JSON"
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        return (
            f"{head}: line {line + 1}, column {column + 1}: character {chr(exc.character)!r} "
            f"is not accepted in YAML; remove it (only printable text is)"
            + _snippet(text, line, column)
        )
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if not isinstance(exc, yaml.MarkedYAMLError) or mark is None:
        return f"{head}: {str(exc)[:300]}"
    problem = exc.problem or exc.context or "cannot be parsed"
    context_mark = exc.context_mark
    context = ""
    if exc.context and exc.problem and context_mark is not None:
        context = f" ({exc.context} at {_where(context_mark)})"
    hint = _yaml_hint(problem, mark.line + 1, context_mark)
    return f"{head}: {_where(mark)}: {problem}{context}{'; ' + hint if hint else ''}" + _snippet(
        text, mark.line, mark.column
    )


def _yaml_hint(problem: str, line: int, context_mark: Any) -> str:
    """What to do about the PyYAML *problem* found on *line* (1-based), if it is a usual one."""
    indent = f"check the indentation of line {line} (use spaces, keys of one mapping aligned)"
    if "'\\t'" in problem:
        return f"line {line} has a tab character: YAML is indented with spaces, never tabs"
    if problem.startswith("mapping values are not allowed"):
        return f"{indent}, or quote a value that contains ': '"
    if problem.startswith(("expected <block end>", "did not find expected")):
        return indent
    if problem.startswith("could not find expected ':'") and context_mark is not None:
        key_line = context_mark.line + 1
        return (
            f"check line {key_line}: a key needs ':' after it, and a value that continues on "
            f"the next line is indented further than its key"
        )
    return ""


def _snippet(text: str, line: int, column: int) -> str:
    """The 0-based *line* of *text* and a caret under *column*, or "" past the end."""
    lines = text.splitlines()
    if not 0 <= line < len(lines):
        return ""
    shown = lines[line].expandtabs(1)[:120]  # one column per tab keeps the caret in place
    return f"\n    {shown}\n    {' ' * min(column, len(shown))}^"


def _too_deep(what: str, max_depth: int) -> str:
    return f"{what} nests lists/mappings deeper than {max_depth} levels; flatten it"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors, aliases, merge keys and deep nesting while composing.

    The checks run in ``compose_node``, i.e. on the event stream before any node is shared
    or any Python object is built; PyYAML's parser and scanner are iterative, and this
    composer recursion is bounded by ``max_depth``.
    """

    def __init__(self, stream: str, *, what: str, max_depth: int) -> None:
        super().__init__(stream)
        self._what = what
        self._max_depth = max_depth
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            msg = (
                f"{self._what} uses a YAML anchor or alias ({_where(event.start_mark)}); they "
                f"are not accepted: write the repeated values out"
            )
            raise DocumentError(msg)
        if isinstance(event, yaml.CollectionStartEvent):
            self._depth += 1
            if self._depth > self._max_depth:
                raise DocumentError(_too_deep(self._what, self._max_depth))
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        for key, _ in node.value:
            if key.tag == _MERGE_TAG:
                msg = (
                    f"{self._what} uses a YAML merge key '<<' ({_where(key.start_mark)}); it "
                    f"is not accepted: write the merged keys out"
                )
                raise DocumentError(msg)
        super().flatten_mapping(node)
