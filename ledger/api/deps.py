"""What the routes depend on: the app's state, a database session, the bearer check."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
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

            self._reader = RegistryReader.connect(self.settings)
        return self._reader


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.ledger
    return state


State = Annotated[ApiState, Depends(get_state)]


def get_session(state: State) -> Iterator[Session]:
    session = Session(state.engine)
    try:
        yield session
    except SQLAlchemyError as exc:
        raise IndexUnavailableError(
            f"the index database failed: {exc.__class__.__name__}",
            hint="check that the database is up; /readyz says more",
        ) from exc
    finally:
        session.close()


DbSession = Annotated[Session, Depends(get_session)]


def require_token(request: Request, state: State) -> None:
    """With a configured token, every API request must carry ``Authorization: Bearer``."""
    if state.token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AuthError("this API needs a bearer token", hint="send Authorization: Bearer <token>")
    if not hmac.compare_digest(given.strip().encode(), state.token.reveal().encode()):
        raise AuthError("the bearer token is not the configured one")
