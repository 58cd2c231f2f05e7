"""The runs query language: filters that combine with AND, OR, NOT and parentheses.

Every filter is a ``key:value`` term; the same keys are plain query parameters
of ``GET /api/v1/runs`` (repeated parameters and ``q`` are all ANDed)::

    committer:0xf39F...      runs committed by this address
    status:finalized         running | finalized | failed
    revoked:true             revoked (or not: false)
    name:resnet*             the manifest's name; * matches any text
    sweep:lr-sweep           the manifest's sweep id
    parent:0xab12...         runs with this direct parent
    started_after:2026-11-01T00:00:00Z     block time, ISO 8601 or Unix seconds
    started_before:1767225600
    metric:val_loss<0.1      a final metric; < <= > >= = !=
    data:bafy...             runs whose manifest names this dataset (its CID or
                             0x digest), or a dataset holding it as a part

Terms next to each other are ANDed; ``OR`` (or ``|``) is weaker than ``AND``;
``NOT`` (or ``-``) negates a term; parentheses group; a value with spaces is
quoted: ``name:"my model"``. Example::

    status:finalized (metric:val_loss<0.1 OR sweep:lr-sweep) NOT revoked:true
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import and_, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from ledger.chain.records import checksum_address
from ledger.errors import InputError
from ledger.ids import RunId
from ledger.index.models import Metric, Parent, Run, RunData

KEYS = (
    "committer",
    "status",
    "revoked",
    "name",
    "sweep",
    "parent",
    "started_after",
    "started_before",
    "metric",
    "data",
)
STATUSES = ("running", "finalized", "failed")
_TOKEN = re.compile(r'\s*(\(|\)|\|\||\||[^\s()"|]+(?:"[^"]*")?|"[^"]*")')
_METRIC = re.compile(r"^([A-Za-z_][\w.\-/]*)\s*(<=|>=|!=|<|>|=)\s*(\S+)$")
MAX_QUERY = 2000
MAX_DEPTH = 32  # parentheses and NOTs inside each other


def _bad(message: str, *, field: str = "q") -> InputError:
    return InputError(
        f"{field}: {message}",
        hint="filters are key:value terms ("
        + ", ".join(KEYS)
        + "), combined with AND, OR, NOT and parentheses, e.g. "
        "status:finalized (metric:val_loss<0.1 OR sweep:s1)",
    )


def term(key: str, value: str, *, field: str | None = None) -> ColumnElement[bool]:
    """The SQL condition of one ``key:value`` filter."""
    where = field or key
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        value = value[1:-1]
    if "\x00" in key or "\x00" in value:
        raise _bad("a filter holds a NUL character", field=where)
    build = _TERMS.get(key)
    if build is None:
        raise _bad(f"unknown filter {key!r}", field=where)
    if not value:
        raise _bad(f"filter {key!r} needs a value", field=where)
    return build(value, where)


def _committer(value: str, where: str) -> ColumnElement[bool]:
    try:
        return Run.committer == checksum_address(value)
    except ValueError as exc:
        raise _bad(f"{value!r} is not a 20-byte hex address", field=where) from exc


def _status(value: str, where: str) -> ColumnElement[bool]:
    if value.lower() not in STATUSES:
        raise _bad(f"status {value!r}: use one of {', '.join(STATUSES)}", field=where)
    return Run.status == value.lower()


def _revoked(value: str, where: str) -> ColumnElement[bool]:
    flag = value.lower()
    if flag not in ("true", "false", "1", "0", "yes", "no"):
        raise _bad(f"revoked {value!r}: use true or false", field=where)
    return Run.revoked == (flag in ("true", "1", "yes"))


def _name(value: str, where: str) -> ColumnElement[bool]:
    if "*" in value:
        pattern = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return Run.name.like(pattern.replace("*", "%"), escape="\\")
    return Run.name == value


def _sweep(value: str, where: str) -> ColumnElement[bool]:
    return Run.sweep_id == value


def _parent(value: str, where: str) -> ColumnElement[bool]:
    parent = str(RunId.parse(value, field=where))
    return Run.run_id.in_(select(Parent.child_id).where(Parent.parent_id == parent))


def timestamp(value: str, where: str) -> int:
    """Unix seconds from Unix seconds or an ISO 8601 time (UTC unless it says otherwise)."""
    text = value.strip()
    if re.fullmatch(r"\d{1,12}", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise _bad(
            f"{value!r} is not a time: use ISO 8601 (2026-11-01T00:00:00Z) or Unix seconds",
            field=where,
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _after(value: str, where: str) -> ColumnElement[bool]:
    return Run.started_at >= timestamp(value, where)


def _before(value: str, where: str) -> ColumnElement[bool]:
    return Run.started_at < timestamp(value, where)


@dataclass(frozen=True)
class MetricFilter:
    name: str
    op: str
    value: float


def parse_metric(value: str, where: str = "metric") -> MetricFilter:
    match = _METRIC.match(value.strip())
    if match is None:
        raise _bad(
            f"{value!r} is not a metric threshold: write NAME OP NUMBER, e.g. val_loss<0.1",
            field=where,
        )
    name, op, number = match.groups()
    try:
        threshold = float(number)
    except ValueError as exc:
        raise _bad(f"{number!r} in {value!r} is not a number", field=where) from exc
    if not math.isfinite(threshold):
        raise _bad(f"{number!r} in {value!r} is not a finite number", field=where)
    return MetricFilter(name, op, threshold)


def _metric(value: str, where: str) -> ColumnElement[bool]:
    parsed = parse_metric(value, where)
    column = Metric.value
    compare: dict[str, Callable[[float], ColumnElement[bool]]] = {
        "<": lambda v: column < v,
        "<=": lambda v: column <= v,
        ">": lambda v: column > v,
        ">=": lambda v: column >= v,
        "=": lambda v: column == v,
        "!=": lambda v: column != v,
    }
    # Uncorrelated: the database finds the matching runs once through
    # ix_metrics_name_value instead of probing the metrics of every run it scans.
    return Run.run_id.in_(
        select(Metric.run_id).where(Metric.name == parsed.name, compare[parsed.op](parsed.value))
    )


def _data(value: str, where: str) -> ColumnElement[bool]:
    from ledger.datasets import parse_dataset

    digest = "0x" + parse_dataset(value, field=where).digest.hex()
    return Run.run_id.in_(select(RunData.run_id).where(RunData.digest == digest))


_TERMS: dict[str, Callable[[str, str], ColumnElement[bool]]] = {
    "committer": _committer,
    "status": _status,
    "revoked": _revoked,
    "name": _name,
    "sweep": _sweep,
    "parent": _parent,
    "started_after": _after,
    "started_before": _before,
    "metric": _metric,
    "data": _data,
}


# -- the expression parser ---------------------------------------------------------


def tokens(text: str) -> list[str]:
    out: list[str] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        match = _TOKEN.match(text, at)
        if match is None:
            raise _bad(f"cannot read the query at character {at + 1}: {text[at : at + 20]!r}")
        out.append(match.group(1))
        at = match.end()
    return out


class _Parser:
    """``or := and (OR and)*``; ``and := unary+``; ``unary := NOT unary | ( or ) | term``."""

    def __init__(self, items: list[str]) -> None:
        self.items = items
        self.at = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.items[self.at] if self.at < len(self.items) else None

    def take(self) -> str:
        item = self.items[self.at]
        self.at += 1
        return item

    def parse(self) -> ColumnElement[bool]:
        if not self.items:
            return true()
        expression = self.or_()
        if self.peek() is not None:
            raise _bad(f"unexpected {self.peek()!r} (term {self.at + 1})")
        return expression

    def or_(self) -> ColumnElement[bool]:
        parts = [self.and_()]
        while self.peek() in ("OR", "|", "||"):
            self.take()
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else or_(*parts)

    def and_(self) -> ColumnElement[bool]:
        parts = [self.unary()]
        while self.peek() not in (None, ")", "OR", "|", "||"):
            if self.peek() == "AND":
                self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else and_(*parts)

    def unary(self) -> ColumnElement[bool]:
        item = self.peek()
        if item is None:
            raise _bad("the query ends where a filter was expected")
        if item in ("NOT", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _bad(f"parentheses and NOTs nest deeper than {MAX_DEPTH} levels")
            try:
                return self._nested(item)
            finally:
                self.depth -= 1
        if item in (")", "AND", "OR", "|", "||"):
            raise _bad(f"unexpected {item!r} (term {self.at + 1})")
        self.take()
        negate = item.startswith("-")
        key, sep, value = item.removeprefix("-").partition(":")
        if not sep:
            raise _bad(f"{item!r} is not a key:value filter")
        condition = term(key, value)
        return not_(condition) if negate else condition

    def _nested(self, item: str) -> ColumnElement[bool]:
        self.take()
        if item == "NOT":
            return not_(self.unary())
        inner = self.or_()
        if self.peek() != ")":
            raise _bad("a '(' is not closed")
        self.take()
        return inner


def parse(text: str) -> ColumnElement[bool]:
    """The SQL condition of a query in the language above."""
    if len(text) > MAX_QUERY:
        raise _bad(f"the query is longer than {MAX_QUERY} characters")
    return _Parser(tokens(text)).parse()


def combine(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return and_(true(), *conditions) if conditions else true()
