// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IProvenanceRegistry
/// @notice Append-only record of machine-learning training runs. Each run is
/// identified by a content-derived id, `keccak256(abi.encode(committer, manifestDigest))`,
/// and records the digests of its manifest, of every checkpoint and of its final
/// weights. Digests are the sha2-256 multihash digests of IPFS CIDs (the manifest's
/// `digests` field names the schemes) or tensor Merkle roots; the bytes live off chain.
/// @dev Gas is a design input. Storage holds only what a write must check or a view
/// must prove: one packed slot per run and, once finalized, one commitment to its
/// final record. Every digest travels in an event; weights digests and tensor roots
/// are indexed topics at the same positions in `CheckpointCommitted` and
/// `RunFinalized`, so one `eth_getLogs` call finds the run of a weights file.
/// Every write can also be signed off chain (EIP-712) and relayed by anyone through
/// {executeSigned}; the signer then counts as the caller.
interface IProvenanceRegistry {
    /// @notice Life-cycle state of a run.
    enum Status {
        None,
        Running,
        Finalized,
        Failed
    }

    /// @notice How a run derives from one of its parents.
    enum Relation {
        None,
        FineTune,
        Distillation,
        Pruning,
        Quantization,
        Resume,
        SweepTrial,
        Other
    }

    /// @notice A parent run and the relation of the new run to it.
    struct Parent {
        bytes32 runId;
        Relation relation;
    }

    /// @notice One run to start, in a batch.
    struct StartRequest {
        bytes32 manifestDigest;
        Parent[] parents;
    }

    /// @notice One checkpoint, as committed and as hashed into the checkpoint Merkle tree.
    struct Checkpoint {
        uint64 step;
        bytes32 weightsDigest;
        bytes32 tensorRoot;
        bytes32 metricsDigest;
    }

    /// @notice One checkpoint of a given run, in a batch.
    struct CheckpointRequest {
        bytes32 runId;
        Checkpoint checkpoint;
    }

    /// @notice What finalization commits to.
    /// @param weightsDigest digest of the final model file's CID
    /// @param tensorRoot Merkle root of the final tensors (zero if not a tensor file)
    /// @param metricsDigest digest of the final metrics document's CID
    /// @param checkpointRoot OpenZeppelin-style Merkle root over the run's checkpoints
    /// @param checkpointCount number of checkpoints under `checkpointRoot`
    struct FinalRecord {
        bytes32 weightsDigest;
        bytes32 tensorRoot;
        bytes32 metricsDigest;
        bytes32 checkpointRoot;
        uint64 checkpointCount;
    }

    /// @notice One run to finalize, in a batch.
    struct FinalizeRequest {
        bytes32 runId;
        FinalRecord record;
    }

    /// @notice What storage holds for a run.
    /// @param committer account that started the run and alone may extend it
    /// @param startedAt block time of the start
    /// @param status life-cycle state
    /// @param revoked true once revoked (independent of `status`)
    /// @param finalCommitment `keccak256(abi.encode(FinalRecord))`, zero until finalized
    struct Run {
        address committer;
        uint64 startedAt;
        Status status;
        bool revoked;
        bytes32 finalCommitment;
    }

    /// @notice A zero digest was given where a digest is required.
    error RegistryZeroDigest();
    /// @notice A batch had no entries.
    error RegistryEmptyBatch();
    /// @notice A run with this id exists already (same committer, same manifest).
    error RegistryRunExists(bytes32 runId);
    /// @notice No run has this id.
    error RegistryUnknownRun(bytes32 runId);
    /// @notice A parent named at start does not exist (a run cannot be its own parent).
    error RegistryUnknownParent(bytes32 parentId);
    /// @notice A parent was given with relation `None`.
    error RegistryInvalidRelation(bytes32 parentId);
    /// @notice Only the run's committer may extend or end it.
    error RegistryNotRunCommitter(bytes32 runId, address account);
    /// @notice The run is not running (it was finalized or marked failed).
    error RegistryRunNotRunning(bytes32 runId, Status status);
    /// @notice The run was revoked already.
    error RegistryRunRevoked(bytes32 runId);
    /// @notice Only the run's committer or an admin may revoke it.
    error RegistryNotAllowedToRevoke(bytes32 runId, address account);
    /// @notice The signed call's deadline has passed.
    error RegistrySignatureExpired(uint256 deadline);
    /// @notice The signature was not made by `signer` for this call, chain and registry.
    error RegistryInvalidSigner(address signer, address recovered);
    /// @notice A signed call may not contain another signed call.
    error RegistryNestedSignedCall();

    /// @notice A run was started by `committer` (the signer, for a signed call).
    event RunStarted(
        bytes32 indexed runId, address indexed committer, bytes32 manifestDigest, Parent[] parents
    );
    /// @notice A checkpoint of a running run was recorded.
    event CheckpointCommitted(
        bytes32 indexed runId,
        bytes32 indexed weightsDigest,
        bytes32 indexed tensorRoot,
        uint64 step,
        bytes32 metricsDigest
    );
    /// @notice A run was finalized; `finalCommitment` hashes the record.
    event RunFinalized(
        bytes32 indexed runId,
        bytes32 indexed weightsDigest,
        bytes32 indexed tensorRoot,
        bytes32 metricsDigest,
        bytes32 checkpointRoot,
        uint64 checkpointCount
    );
    /// @notice A run ended in failure.
    event RunFailed(bytes32 indexed runId, string reason);
    /// @notice A run was revoked; its descendants are tainted.
    event RunRevoked(bytes32 indexed runId, address indexed revoker, string reason);

    /// @notice Start a run. The caller must hold the committer role.
    /// @return runId `keccak256(abi.encode(caller, manifestDigest))`
    function startRun(bytes32 manifestDigest, Parent[] calldata parents)
        external
        returns (bytes32 runId);

    /// @notice Start several runs in one transaction; reverts whole if one is refused.
    function startRuns(StartRequest[] calldata requests)
        external
        returns (bytes32[] memory runIds);

    /// @notice Record a checkpoint of a running run. Only the run's committer may.
    /// @dev Nothing is stored: the event is the record, and the final Merkle root
    /// commits to all checkpoints. A re-sent checkpoint emits a second, identical event.
    function commitCheckpoint(bytes32 runId, Checkpoint calldata checkpoint) external;

    /// @notice Record several checkpoints, of one or more runs, in one transaction.
    function commitCheckpoints(CheckpointRequest[] calldata requests) external;

    /// @notice Finalize a running run. Only the run's committer may.
    function finalizeRun(bytes32 runId, FinalRecord calldata record) external;

    /// @notice Finalize several runs in one transaction.
    function finalizeRuns(FinalizeRequest[] calldata requests) external;

    /// @notice Mark a running run as failed. Only the run's committer may.
    function markFailed(bytes32 runId, string calldata reason) external;

    /// @notice Revoke a run. Its committer or an admin may, once.
    function revokeRun(bytes32 runId, string calldata reason) external;

    /// @notice Perform `data` (a call of this registry) as `signer`, who signed it off chain.
    /// @dev EIP-712 type `SignedCall(address signer,uint256 nonce,uint256 deadline,bytes data)`
    /// over this registry's domain (name "ProvenanceRegistry", version "2", chain id, address).
    /// The nonce must be `nonces(signer)` and is used up, so a signature works once, on one
    /// chain, for one registry. Anyone may relay; the record names the signer.
    function executeSigned(
        address signer,
        uint256 nonce,
        uint256 deadline,
        bytes calldata data,
        bytes calldata signature
    ) external returns (bytes memory result);

    /// @notice The stored record of a run (status `None` when unknown).
    function getRun(bytes32 runId) external view returns (Run memory);

    /// @notice Whether `record` is exactly what run `runId` was finalized with.
    function isFinalRecord(bytes32 runId, FinalRecord calldata record)
        external
        view
        returns (bool);

    /// @notice Whether `checkpoint` is under the checkpoint root of run `runId`'s
    /// final `record`, by an OpenZeppelin Merkle `proof` (sorted pairs, double-hashed leaves).
    function verifyCheckpoint(
        bytes32 runId,
        FinalRecord calldata record,
        Checkpoint calldata checkpoint,
        bytes32[] calldata proof
    ) external view returns (bool);

    /// @notice The Merkle leaf of a checkpoint:
    /// `keccak256(bytes.concat(keccak256(abi.encode(step, weights, tensorRoot, metrics))))`.
    function checkpointLeaf(Checkpoint calldata checkpoint) external pure returns (bytes32);

    /// @notice The id a run started by `committer` with `manifestDigest` has.
    function computeRunId(address committer, bytes32 manifestDigest)
        external
        pure
        returns (bytes32);

    /// @notice Version of this registry's storage and event layout.
    function version() external pure returns (string memory);
}
