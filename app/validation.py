"""Typed validation errors, and the JSON body decoder that reports every bad field in our own words.

A validator raises :class:`InvalidFieldError` (the field and what is wrong); a request that fails raises
:class:`InvalidRequestError` with every :class:`FieldError`; ``app/errors.py`` turns that into one 400 problem. Nothing
here recovers a field name from an error message.

Request bodies are decoded by :class:`StructBody`, a Litestar DTO that keeps Litestar's OpenAPI schema for the
body type. The common case, a valid body, is one ``msgspec.json.decode`` call. Only a body that fails is looked
at again, field by field, to name each bad field and say what it must be: msgspec's errors stop at the first
problem and word it for Python programmers ("Expected `str`, got `int` - at `$.title`"). Decoding is strict (a
boolean is ``true`` or ``false``), so the OpenAPI document's types are exactly what is accepted; rules beyond
types are each body type's ``__field_checks__`` (:class:`CheckedStruct`), all run, all reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping, Sequence
from functools import cache
from typing import Any, ClassVar, TypeVar, get_type_hints

import msgspec
import msgspec.inspect as mi
from litestar.connection import ASGIConnection
from litestar.dto import AbstractDTO, DTOFieldDefinition
from litestar.typing import FieldDefinition

T = TypeVar("T")
S = TypeVar("S", bound=msgspec.Struct)


class FieldError(msgspec.Struct):
    """One invalid input value: where it is and what is wrong with it."""

    field: str
    message: str
    source: str | None = None


class InvalidFieldError(ValueError):
    """A value a validator refused: ``field`` names it, ``message`` says what is wrong (``str()`` is the message)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class InvalidFieldsError(ValueError):
    """Several values a struct's checks refused at once (see :class:`FieldChecks`)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in errors))
        self.errors = list(errors)


class CheckedStruct(msgspec.Struct, kw_only=True):
    """A body type whose fields have rules beyond their types: ``__field_checks__`` maps a field to its check,
    which returns the value to keep (trimmed, say) or raises :class:`InvalidFieldError`. Decoding runs every
    check and reports every refusal at once (:class:`InvalidFieldsError`), not only the first; a body that
    fails on types as well gets the checks of its well-typed fields too (:func:`body_errors`). Rules on the
    whole body go in ``__post_init__`` after ``super().__post_init__()``."""

    __field_checks__: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    def __post_init__(self) -> None:
        errors: list[FieldError] = []
        for name, check in self.__field_checks__.items():
            value = getattr(self, name)
            if value is None or value is msgspec.UNSET:
                continue
            try:
                setattr(self, name, check(value))
            except InvalidFieldError as exc:
                errors.append(FieldError(exc.field, exc.message, "body"))
        if errors:
            raise InvalidFieldsError(errors)


class InvalidRequestError(ValueError):
    """The request is bad input; ``errors`` lists every value that is wrong. Answered with a 400 problem."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in errors))
        self.errors = list(errors)

    @classmethod
    def one(cls, field: str, message: str, source: str) -> InvalidRequestError:
        """A request with one bad value."""
        return cls([FieldError(field, message, source)])


# -- request bodies --------------------------------------------------------------------------------------------


def decode_body(raw: bytes, body_type: Any) -> Any:
    """``raw`` as ``body_type`` (a Struct, or a Struct or ``None``), or :class:`InvalidRequestError` naming every bad
    field. Decoding is strict, as the OpenAPI document says: a boolean is ``true`` or ``false``, a number is a
    JSON number, a string a JSON string (no ``"true"``, ``1`` or ``"5"`` in their place)."""
    try:
        return msgspec.json.decode(raw, type=body_type, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise InvalidRequestError(body_errors(raw, body_type)) from None


def body_errors(raw: bytes, body_type: Any) -> list[FieldError]:
    """Every problem with a body that failed to decode as ``body_type``."""
    try:
        document = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return [FieldError("body", "must be a JSON document in UTF-8 (the body is not valid JSON)", "body")]
    except RecursionError:
        return [FieldError("body", "is nested too deeply", "body")]
    struct = _struct_of(body_type)
    if struct is None:  # not a body type this decoder describes: say only that it does not fit
        return [FieldError("body", "does not have the documented shape", "body")]
    if not isinstance(document, dict):
        return [FieldError("body", f"must be a JSON object, not {_json_kind(document)}", "body")]
    errors = [error for field in _fields(struct) for error in _field_errors(struct, field, document)]
    errors += _check_errors(struct, document, reported={error.field.partition("[")[0] for error in errors})
    if not errors:  # each field is fine on its own: a rule on the whole body refused it ("at least one field")
        try:
            msgspec.convert(document, struct, strict=True)
        except msgspec.ValidationError as exc:
            if isinstance(exc.__cause__, ValueError):
                errors.append(FieldError("body", str(exc.__cause__), "body"))
    # Type errors and check refusals in field order.
    order = {field.encode_name: index for index, field in enumerate(_fields(struct))}
    errors.sort(key=lambda error: order.get(error.field.partition("[")[0], len(order)))
    return errors or [FieldError("body", "is not valid", "body")]  # never empty: decoding failed for a reason


def _check_errors(struct: type[msgspec.Struct], document: dict[str, Any], reported: set[str]) -> list[FieldError]:
    """The refusals of a :class:`CheckedStruct`'s field checks, for the sent fields whose type is right."""
    checks: Mapping[str, Callable[[Any], Any]] = getattr(struct, "__field_checks__", {})
    errors: list[FieldError] = []
    for field in _fields(struct):
        if field.name not in checks or field.encode_name in reported or field.encode_name not in document:
            continue
        value = msgspec.convert(document[field.encode_name], _annotations(struct)[field.name], strict=True)
        if value is None:
            continue
        try:
            checks[field.name](value)
        except InvalidFieldError as exc:
            errors.append(FieldError(exc.field, exc.message, "body"))
    return errors


def path_errors(connection: ASGIConnection[Any, Any, Any, Any]) -> list[FieldError]:
    """The request's bad path parameters, checked against the handler's own signature (as Litestar checks them)."""
    hints = _annotations(connection.route_handler.signature_model)
    errors: list[FieldError] = []
    for name, value in connection.path_params.items():
        if name in hints:
            try:
                msgspec.convert(value, hints[name], strict=False)
            except msgspec.ValidationError:
                errors.append(FieldError(name, f"must be {expected(mi.type_info(hints[name]))}", "path"))
    return errors


def parameter_message(connection: ASGIConnection[Any, Any, Any, Any], name: str) -> str | None:
    """What the route's query, path or header parameter ``name`` must be, in words ("must be one of "asc",
    "desc""), from the handler's own signature; ``None`` when the route has no such parameter."""
    hints = _annotations(connection.route_handler.signature_model)
    if name not in hints:
        return None
    info = mi.type_info(hints[name])
    if isinstance(info, mi.UnionType):  # an optional parameter: absent, never null
        options = [option for option in info.types if not isinstance(option, mi.NoneType)]
        info = options[0] if len(options) == 1 else mi.UnionType(tuple(options))
    if isinstance(info, mi.ListType) or (isinstance(info, mi.Metadata) and isinstance(info.type, mi.ListType)):
        items = _list_type(info)
        assert items is not None  # noqa: S101 - a list type has an item type
        return f"must be {expected(items)} (each value, when repeated)"
    return f"must be {expected(info)}"


def _struct_of(body_type: Any) -> type[msgspec.Struct] | None:
    info = mi.type_info(body_type)
    if isinstance(info, mi.UnionType):  # TaskCompletion | None: the body is optional
        info = next((t for t in info.types if not isinstance(t, mi.NoneType)), info)
    return info.cls if isinstance(info, mi.StructType) else None


@cache
def _fields(struct: type[msgspec.Struct]) -> tuple[mi.Field, ...]:
    info = mi.type_info(struct)
    return info.fields if isinstance(info, mi.StructType) else ()


@cache
def _annotations(struct: type[msgspec.Struct]) -> dict[str, Any]:
    return get_type_hints(struct, include_extras=True)


def _field_errors(  # noqa: PLR0911 - one return per finding
    struct: type[msgspec.Struct], field: mi.Field, document: dict[str, Any]
) -> list[FieldError]:
    name = field.encode_name
    if name not in document:
        return [FieldError(name, "is required", "body")] if field.required else []
    value = document[name]
    try:
        msgspec.convert(value, _annotations(struct)[field.name], strict=True)
    except msgspec.ValidationError as exc:
        if isinstance(exc.__cause__, InvalidFieldError):
            return [FieldError(exc.__cause__.field, exc.__cause__.message, "body")]
        if isinstance(exc.__cause__, InvalidFieldsError):
            return exc.__cause__.errors
        items = _list_type(field.type)
        inner = items.type if isinstance(items, mi.Metadata) else items
        if isinstance(inner, mi.StructType) and isinstance(value, list):  # a list of objects (a batch's operations)
            errors = _item_errors(name, inner.cls, value)
            if errors:
                return errors
        if items is not None and isinstance(value, list):
            errors = [
                FieldError(f"{name}[{index}]", f"must be {expected(items)}", "body")
                for index, item in enumerate(value)
                if not _accepts(items, item)
            ]
            if errors:
                return errors
        return [FieldError(name, f"must be {expected(field.type)}", "body")]
    return []


def _item_errors(name: str, struct: type[msgspec.Struct], items: list[Any]) -> list[FieldError]:
    """Every bad member of every object of a list, named ``name[i].member``."""
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if not isinstance(item, dict):
            errors.append(FieldError(where, f"must be a JSON object, not {_json_kind(item)}", "body"))
            continue
        for member in _fields(struct):
            errors += [FieldError(f"{where}.{e.field}", e.message, "body") for e in _field_errors(struct, member, item)]
    return errors


def _accepts(info: mi.Type, value: Any) -> bool:
    """Whether ``value`` fits ``info`` (used only for list items, where msgspec names the index in a string)."""
    info = info.type if isinstance(info, mi.Metadata) else info
    if isinstance(info, mi.UnionType):
        return any(_accepts(option, value) for option in info.types)
    if isinstance(info, mi.StrType):
        return isinstance(value, str) and _in_bounds(len(value), info.min_length, info.max_length)
    if isinstance(info, mi.NoneType):
        return value is None
    if isinstance(info, mi.LiteralType):
        return value in info.values
    return True  # a kind lists do not hold here: the field-level message covers it


def _in_bounds(size: int, low: int | None, high: int | None) -> bool:
    return (low is None or size >= low) and (high is None or size <= high)


def _list_type(info: mi.Type) -> mi.Type | None:
    info = info.type if isinstance(info, mi.Metadata) else info
    return info.item_type if isinstance(info, mi.ListType) else None


def expected(info: mi.Type) -> str:  # noqa: PLR0911 - one return per kind of type
    """What a value of this type must be, in words: "a string of at most 1000 characters or null"."""
    if isinstance(info, mi.Metadata):
        return expected(info.type)
    if isinstance(info, mi.UnionType):
        return " or ".join(expected(option) for option in info.types)
    if isinstance(info, mi.StrType):
        shape = " in the form the OpenAPI document gives" if info.pattern else ""
        return "a string" + _size(info.min_length, info.max_length, "character") + shape
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.IntType):
        return "an integer" + _range(info.ge, info.le)
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(value) for value in info.values)
    if isinstance(info, mi.NoneType):
        return "null"
    if isinstance(info, mi.ListType):
        return "a list" + _size(info.min_length, info.max_length, "item") + f" of {_plural(expected(info.item_type))}"
    return "a value of the documented type"


def _size(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f" of {low} to {high} {unit}s"
    if high is not None:
        return f" of at most {high} {unit}{'' if high == 1 else 's'}"
    if low is not None and low > 0:
        return f" of at least {low} {unit}{'' if low == 1 else 's'}"
    return ""


def _range(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" of at least {low}"
    if high is not None:
        return f" of at most {high}"
    return ""


def _plural(phrase: str) -> str:
    """ "a string of 1 to 40 characters" → "strings of 1 to 40 characters"."""
    for article in ("a ", "an "):
        if phrase.startswith(article):
            noun, _, rest = phrase[len(article) :].partition(" ")
            return f"{noun}s {rest}".rstrip()
    return phrase


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list"


class StructBody(AbstractDTO[T]):
    """The request body DTO for every task route: :func:`decode_body` on the raw bytes, the body type's own schema
    in OpenAPI (so the document is what it would be without a DTO). Set on a controller with ``return_dto=None``."""

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        """Not used: this DTO transfers the body type itself."""
        yield from ()

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        """Not used: this DTO transfers the body type itself."""
        return False

    @classmethod
    def create_for_field_definition(
        cls, field_definition: FieldDefinition, handler_id: str, backend_cls: Any = None
    ) -> None:
        """Nothing to build: decoding needs only the handler's ``data`` annotation."""

    @classmethod
    def create_openapi_schema(cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any) -> Any:
        """The body type's own schema."""
        return schema_creator.for_field_definition(field_definition)

    def decode_bytes(self, value: bytes) -> Any:
        """The body as the handler's ``data`` type, or :class:`InvalidRequestError`."""
        data_field = self.asgi_connection.route_handler.parsed_data_field
        # Litestar calls this only for a handler that takes ``data``.
        try:
            return decode_body(value, data_field.annotation if data_field else Any)
        except InvalidRequestError as exc:  # Litestar reads the body before it checks the path: check it first
            raise InvalidRequestError([*path_errors(self.asgi_connection), *exc.errors]) from None
