"""Loading a pipeline spec: from a file, text or dict to a validated ``PipelineSpec``.

Every failure is a ``SpecError`` whose message names the field path, the value and what
is allowed (``format_validation_error``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mlaas4hep.documents import load_yaml
from mlaas4hep.errors import PayloadTooLarge, SpecError
from mlaas4hep.spec.base import SPEC_VERSION
from mlaas4hep.spec.pipeline import PipelineSpec
from mlaas4hep.spec.report import format_problems

MAX_SPEC_BYTES = 1_000_000


def load_spec(source: str | Path | dict[str, Any]) -> PipelineSpec:
    """Load and validate a pipeline spec.

    *source* is a path (``Path``, or a ``str`` naming an existing file or ending in
    ``.yaml``/``.yml``/``.json``), the YAML/JSON text itself, or an already parsed dict.

    Raises:
        SpecError: unreadable file, bad YAML/JSON, or a field that fails validation; the
            message names each field path (``preprocess.normalize``), the bad value and
            what is allowed.
    """
    if isinstance(source, dict):
        return validate_spec(source)
    text, origin = _read_source(source)
    try:
        raw = load_yaml(text, what=origin, limit=MAX_SPEC_BYTES)
    except PayloadTooLarge as exc:
        raise SpecError(str(exc)) from exc
    if not isinstance(raw, dict):
        msg = (
            f"{origin}: a pipeline spec is a mapping (name:, data:, ...), got {type(raw).__name__}"
        )
        raise SpecError(msg)
    return validate_spec(raw, origin=origin)


def validate_spec(raw: dict[str, Any], *, origin: str = "spec") -> PipelineSpec:
    """Validate an already parsed spec; raises ``SpecError`` (see ``load_spec``)."""
    version = raw.get("version", SPEC_VERSION)
    if version != SPEC_VERSION:
        msg = (
            f"{origin}: version {version!r} is not supported; this mlaas4hep reads version "
            f"{SPEC_VERSION} (set 'version: {SPEC_VERSION}')"
        )
        raise SpecError(msg)
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, origin)) from exc


def with_params(spec: PipelineSpec, params: dict[str, Any]) -> PipelineSpec:
    """*spec* with each ``path: value`` of *params* set, ``tune`` dropped, validated again.

    Raises ``SpecError`` naming the path and value when the result is not a valid spec.
    """
    raw = spec.model_dump(mode="json")
    raw["tune"] = None
    for path, value in params.items():
        section, _, option = path.partition(".")
        raw[section][option] = value
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        shown = ", ".join(f"{p}={v!r}" for p, v in params.items())
        raise SpecError(format_validation_error(exc, f"the trial spec ({shown})")) from exc


def _read_source(source: str | Path) -> tuple[str, str]:
    if isinstance(source, str) and not _looks_like_path(source):
        if len(source) > MAX_SPEC_BYTES:
            raise SpecError(f"spec text is {len(source)} bytes; the limit is {MAX_SPEC_BYTES}")
        return source, "spec"
    path = Path(source)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            msg = f"spec file {str(path)!r} is {size} bytes; the limit is {MAX_SPEC_BYTES}"
            raise SpecError(msg)
        return path.read_text(encoding="utf-8"), repr(str(path))
    except FileNotFoundError as exc:
        msg = f"spec file {str(path)!r} does not exist; check the path"
        raise SpecError(msg) from exc
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read spec file {str(path)!r}: {exc}"
        raise SpecError(msg) from exc


def _looks_like_path(text: str) -> bool:
    if "\n" in text or text.lstrip().startswith("{") or len(text) > 4096:
        return False
    return text.endswith((".yaml", ".yml", ".json")) or Path(text).is_file()


def format_validation_error(
    exc: ValidationError,
    origin: str = "spec",
    *,
    root: type[BaseModel] | None = None,
    what: str = "pipeline spec",
) -> str:
    """One line per problem: ``field.path: message (got value)`` plus allowed names.

    *root*: the model validated (default ``PipelineSpec``), whose fields name the allowed
    keys of an unknown one; *what*: the document's kind, for the first line.
    """
    return format_problems(exc, origin, root=root or PipelineSpec, what=what)
