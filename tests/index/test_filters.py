"""The runs query language: precedence, quoting, negation and its error messages."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import sqlite

from ledger.errors import InputError
from ledger.index.filters import parse, tokens


def sql(text: str) -> str:
    compiled = parse(text).compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    return " ".join(str(compiled).split())


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    loose = sql("status:running OR status:failed revoked:true")
    assert loose == "runs.status = 'running' OR runs.status = 'failed' AND runs.revoked = 1"
    grouped = sql("(status:running OR status:failed) AND revoked:true")
    assert grouped == "(runs.status = 'running' OR runs.status = 'failed') AND runs.revoked = 1"
    assert sql("status:running | status:failed") == sql("status:running OR status:failed")


def test_negation_quoting_and_wildcards() -> None:
    assert sql("NOT revoked:true") == sql("-revoked:true") == "runs.revoked != 1"
    assert tokens('name:"my model" OR sweep:s1') == ['name:"my model"', "OR", "sweep:s1"]
    assert sql('name:"my model"') == "runs.name = 'my model'"
    assert sql("name:res_net*") == "runs.name LIKE 'res\\_net%' ESCAPE '\\'"
    assert "metrics.value < 0.1" in sql("metric:val_loss<0.1")
    assert "metrics.name = 'val_loss'" in sql("metric:val_loss<0.1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("status", "is not a key:value filter"),
        ("status:running)", "unexpected ')'"),
        ("OR status:running", "unexpected 'OR'"),
        ("NOT", "ends where a filter was expected"),
        ("metric:val_loss<nan", "not a finite number"),
        ("committer:bob", "not a 20-byte hex address"),
        ("revoked:maybe", "use true or false"),
        ("x" * 2001, "longer than 2000 characters"),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(text)
    assert message in caught.value.message
