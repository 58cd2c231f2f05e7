"""What the routes depend on: the app's state, a database session, the bearer check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ledger.config import Secret, Settings
from ledger.errors import AuthError, IndexUnavailableError
from ledger.index.indexer import Indexer
from ledger.store import ArtifactStore


@dataclass
class ApiState:
    settings: Settings
    engine: Engine
    store: ArtifactStore
    token: Secret | None
    max_upload: int
    indexer: Indexer | None = None
    _reader: Any = field(default=None, repr=False)

    def reader(self) -> Any:
        """The web3-free registry reader (connected once, on first use)."""
        if self._reader is None:
            from ledger.chain.reader import RegistryReader

            reader = RegistryReader.connect(self.settings)
            reader.memo = False  # it serves for hours: a reorganised chain must show
            self._reader = reader
        return self._reader


async def get_state(request: Request) -> ApiState:
    # async: FastAPI would run a plain function on a worker thread, for a lookup
    state: ApiState = request.app.state.ledger
    return state


State = Annotated[ApiState, Depends(get_state)]


@contextmanager
def read_index(state: ApiState) -> Iterator[Session]:
    """A session for one route's reads, opened and closed inside the route.

    Not a ``yield`` dependency: that would keep the pooled connection until the
    answer has been sent, and under load the routes waiting for a connection
    would hold every worker thread the answers still need.
    """
    try:
        with Session(state.engine) as session:
            yield session
    except SQLAlchemyError as exc:
        raise IndexUnavailableError(
            f"the index database failed: {exc.__class__.__name__}",
            hint="check that the database is up; /readyz says more",
        ) from exc


def token_matches(header: str, token: Secret) -> bool:
    """Whether an ``Authorization`` header carries ``token`` as a bearer token."""
    scheme, _, given = header.partition(" ")
    return (
        scheme.lower() == "bearer"
        and bool(given)
        and hmac.compare_digest(given.strip().encode(), token.reveal().encode())
    )


async def require_token(request: Request, state: State) -> None:
    """With a configured token, every API request must carry ``Authorization: Bearer``."""
    if state.token is None:
        return
    header = request.headers.get("authorization", "")
    if token_matches(header, state.token):
        return
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AuthError("this API needs a bearer token", hint="send Authorization: Bearer <token>")
    raise AuthError("the bearer token is not the configured one")
