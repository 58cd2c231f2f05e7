"""The one exception tree of ledger.

Every error that ledger raises on purpose derives from :class:`LedgerError` and
carries a message written for the user: what went wrong, where (file, field,
address), and what to do about it. Only the CLI turns these into exit codes
(:attr:`LedgerError.exit_code`, in :func:`ledger.cli.main.report_error`) and
only the API into HTTP statuses (:attr:`LedgerError.http_status`).

``ledger verify`` has no error class of its own: its outcomes are exit codes
(0 verified, 3 mismatch, 4 unknown, 5 revoked, see :class:`ledger.verify.Outcome`),
and what stops it from checking at all is one of the kinds below (a bad file
is an :class:`InputError`, an unreachable chain a :class:`ChainError`...).

Some classes also subclass a builtin (``FileNotFoundError``, ``ValueError``)
so that callers that already catch those keep working.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error ledger raises on purpose."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


# -- configuration and input --------------------------------------------------


class ConfigError(LedgerError):
    """The configuration (file or environment) is missing or inconsistent."""

    exit_code = 10
    http_status = 500


class KeystoreError(ConfigError):
    """A keystore cannot be opened: wrong password, unreadable or not a keystore."""

    exit_code = 12


class InputError(LedgerError, ValueError):
    """A file or argument given by the user cannot be used as it is."""

    exit_code = 11
    http_status = 422


class FileMissingError(InputError, FileNotFoundError):
    """A path given by the user does not exist or is not a regular file."""


class UnsupportedFormatError(InputError):
    """A file is of a kind ledger cannot read safely (e.g. a pickle needing code)."""


class BadIdError(InputError):
    """A run id or digest is not the hex of the right number of bytes.

    :attr:`field` names where the value came from (an option, a query parameter,
    a body field); the message says what a valid value looks like.
    """

    def __init__(self, message: str, *, field: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.field = field


# -- the artifact store -------------------------------------------------------


class StoreError(LedgerError):
    """The artifact store failed."""

    exit_code = 20
    http_status = 502


class ArtifactNotFoundError(StoreError, KeyError):
    """No artifact with this CID is in the store."""

    http_status = 404

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return LedgerError.__str__(self)


class IntegrityError(StoreError):
    """Stored bytes no longer hash to the CID they are filed under."""


class InvalidDocumentError(StoreError):
    """A JSON document in the store cannot be used: its bytes no longer hash to
    its CID, are not a JSON object, or carry another ``schema`` than expected.
    :attr:`cid` names the artifact."""

    def __init__(self, message: str, *, cid: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.cid = cid


class StoreUnavailableError(StoreError, ConnectionError):
    """The store (e.g. an IPFS node) does not answer; retrying later may succeed."""

    http_status = 503


class StoreFullError(StoreError):
    """The store's disk is full, over quota or failing writes (ENOSPC, EDQUOT, EIO):
    nothing was stored, and retrying once there is room again succeeds. The
    outbox keeps such records and retries them, as for an unavailable store."""

    http_status = 507


class StoreRefusedError(StoreError):
    """The store (e.g. an IPFS node) answered a request with an error of its own."""

    def __init__(self, message: str, *, node_message: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.node_message = node_message


# -- the chain ----------------------------------------------------------------


class ChainError(LedgerError):
    """The chain could not be reached or answered unexpectedly."""

    exit_code = 30
    http_status = 502


class ChainUnavailableError(ChainError, ConnectionError):
    """No JSON-RPC endpoint answers at the configured URL."""

    http_status = 503


class RpcError(ChainError):
    """The node answered a JSON-RPC call with an error object (code, message, data)."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        data: object = None,
        node_message: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.data = data
        self.node_message = node_message
        """The error object's own message, as the node wrote it."""


class NonceTooLowError(ChainError):
    """A transaction's nonce was already used by another transaction of its sender."""


class FeeAboveCapError(ChainError):
    """The chain asks more per gas than ``LEDGER_MAX_FEE_GWEI`` allows: records wait."""

    def __init__(self, message: str, *, needed: int, cap: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.needed = needed
        self.cap = cap


class UnderpricedError(ChainError):
    """The node refused a transaction's fees: under the next block's base fee, or too
    small a raise over a pending transaction with the same nonce."""


class InsufficientFundsError(ChainError):
    """The account paying for a transaction cannot cover its gas: records wait until
    it is funded."""


class RegistryNotDeployedError(ChainError):
    """No registry contract is at the configured address on this chain."""


class MissingRoleError(ChainError):
    """The signing key lacks a role the registry requires (e.g. committer)."""

    http_status = 403


class TransactionRevertedError(ChainError):
    """The registry refused a transaction; :attr:`error_name` names its custom error."""

    def __init__(
        self,
        message: str,
        *,
        error_name: str,
        args: tuple[object, ...] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.error_name = error_name
        self.error_args = args


class CompilerError(LedgerError):
    """The Solidity compiler is missing or failed."""

    exit_code = 31


# -- recording ------------------------------------------------------------------


class RecordError(LedgerError):
    """A run could not be recorded (e.g. used after it ended)."""

    exit_code = 40


class JournalFullError(RecordError):
    """The disk under the outbox journal is full: an append could not be written.
    The outbox keeps such records in memory and writes them once there is room."""


# -- replay ---------------------------------------------------------------------


class ReplayError(LedgerError):
    """``ledger replay`` could not reach a verdict: the replayed command failed or
    wrote no weights (its verdicts are exit codes: 0 reproduced, 8 diverged)."""

    exit_code = 9
    http_status = 422


class NotReplayableError(ReplayError):
    """The run's records hold no resume state (or too few checkpoints) to replay."""


class CodeDriftError(ReplayError):
    """The working tree's code is not the code the run's manifest names."""


class ReplayInterruptedError(ReplayError):
    """The replay was interrupted (Ctrl-C, SIGTERM) before its verdict: the training
    command was stopped, the replay's temporary files removed, nothing recorded."""

    exit_code = 130  # what a shell reports for a process ended by SIGINT


# -- the audit index and API --------------------------------------------------


class AuditIndexError(LedgerError):
    """The audit index (SQL database) failed or cannot be used."""

    exit_code = 60
    http_status = 503


class IndexUnavailableError(AuditIndexError, ConnectionError):
    """The index database does not answer or cannot be migrated."""


class NotFoundError(InputError, LookupError):
    """The thing asked for (a run, a record) is not in the index."""

    http_status = 404


class AuthError(LedgerError):
    """A request to the API lacks the bearer token it needs, or the token is wrong."""

    exit_code = 11
    http_status = 401
