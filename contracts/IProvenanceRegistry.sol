// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IProvenanceRegistry
/// @notice Append-only record of machine-learning training runs. Each run is
/// identified by a content-derived id, `keccak256(abi.encode(committer, manifestDigest))`,
/// and records the digests of its manifest, of every checkpoint and of its final
/// weights. Digests are the sha2-256 multihash digests of IPFS CIDs (the manifest's
/// `digests` field names the schemes) or tensor Merkle roots; the bytes live off chain.
/// @dev Gas is a design input. Storage holds only what a write must check or a view
/// must answer: one packed slot per run (with the blocks of its first and latest
/// events), one commitment to its final record, and, per weights digest and per
/// tensor root, the latest block that recorded it. Every digest travels in an event;
/// weights digests and tensor roots are indexed topics at the same positions in
/// `CheckpointCommitted` and `RunFinalized`.
/// Lookups cost the same however long the chain is: a view names a block, a
/// single-block `eth_getLogs` there returns the events, and each event names the
/// block of the previous event of the same digest (or run), so a reader walks every
/// claim of a file, or every event of a run, in calls proportional to their number.
/// A previous-block field is 0 when there is none, and equals the event's own block
/// when an earlier event of the same chain is in that block.
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
    /// @param status life-cycle state
    /// @param revoked true once revoked (independent of `status`)
    /// @param startBlock block of its `RunStarted` event (its start time is that block's)
    /// @param lastBlock block of its latest `RunStarted`, `CheckpointCommitted`,
    /// `RunFinalized` or `RunFailed` event
    /// @param revokedBlock block of its `RunRevoked` event, zero unless revoked
    /// @param finalCommitment `keccak256(abi.encode(FinalRecord))`, zero until finalized
    struct Run {
        address committer;
        Status status;
        bool revoked;
        uint64 startBlock;
        uint64 lastBlock;
        uint64 revokedBlock;
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
    /// @notice The artifact (e.g. a dataset) was revoked already.
    error RegistryArtifactRevoked(bytes32 digest);
    /// @notice A replay attestation's step range is empty (`fromStep` after `toStep`).
    error RegistryInvalidStepRange(uint64 fromStep, uint64 toStep);

    /// @notice A run was started by `committer` (the signer, for a signed call).
    /// @param previousChildBlocks for each entry of `parents`, the block that last started
    /// a run naming that parent before, or 0: the links by which a reader finds a run's
    /// children (in a block, a parent's first child links back, later ones to the block)
    event RunStarted(
        bytes32 indexed runId,
        address indexed committer,
        bytes32 manifestDigest,
        Parent[] parents,
        uint64[] previousChildBlocks
    );
    /// @notice A checkpoint of a running run was recorded.
    /// @param previousRunBlock block of the run's previous event (`RunStarted` at least)
    /// @param previousWeightsBlock block that last recorded `weightsDigest` before, or 0
    /// @param previousTensorBlock block that last recorded `tensorRoot` before, or 0
    /// (always 0 for a zero root)
    event CheckpointCommitted(
        bytes32 indexed runId,
        bytes32 indexed weightsDigest,
        bytes32 indexed tensorRoot,
        uint64 step,
        bytes32 metricsDigest,
        uint64 previousRunBlock,
        uint64 previousWeightsBlock,
        uint64 previousTensorBlock
    );
    /// @notice A run was finalized; `finalCommitment` hashes the record.
    /// @dev The previous-block fields are as in `CheckpointCommitted`.
    event RunFinalized(
        bytes32 indexed runId,
        bytes32 indexed weightsDigest,
        bytes32 indexed tensorRoot,
        bytes32 metricsDigest,
        bytes32 checkpointRoot,
        uint64 checkpointCount,
        uint64 previousRunBlock,
        uint64 previousWeightsBlock,
        uint64 previousTensorBlock
    );
    /// @notice A run ended in failure.
    /// @param previousRunBlock block of the run's previous event
    event RunFailed(bytes32 indexed runId, string reason, uint64 previousRunBlock);
    /// @notice A run was revoked; its descendants are tainted.
    event RunRevoked(bytes32 indexed runId, address indexed revoker, string reason);
    /// @notice An artifact other than a run (e.g. a dataset, by the digest of its
    /// fingerprint's CID) was revoked; runs that used it are tainted.
    event ArtifactRevoked(bytes32 indexed digest, address indexed revoker, string reason);
    /// @notice `attester` replayed steps `fromStep` to `toStep` of run `runId` and found
    /// them `reproduced` (or not); `reportDigest` is the digest of the report's CID.
    /// @param previousBlock block of the run's previous attestation (by anyone), or 0
    event ReplayAttested(
        bytes32 indexed runId,
        address indexed attester,
        uint64 fromStep,
        uint64 toStep,
        bool reproduced,
        bytes32 reportDigest,
        uint64 previousBlock
    );

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

    /// @notice Revoke an artifact that is not a run, such as a dataset (`digest`: the
    /// sha2-256 digest of its fingerprint's CID). Only an admin may, once per digest.
    function revokeArtifact(bytes32 digest, string calldata reason) external;

    /// @notice Attest the outcome of replaying steps `fromStep`..`toStep` of an existing
    /// run. Any account may: the attester's address is the point, readers choose whom
    /// to trust. `reportDigest` (non-zero) is the digest of the replay report's CID.
    function attestReplay(
        bytes32 runId,
        uint64 fromStep,
        uint64 toStep,
        bool reproduced,
        bytes32 reportDigest
    ) external;

    /// @notice Perform `data` (a call of this registry) as `signer`, who signed it off chain.
    /// @dev EIP-712 type `SignedCall(address signer,uint256 nonce,uint256 deadline,bytes data)`
    /// over this registry's domain (name "ProvenanceRegistry", version "2", chain id, address);
    /// the domain's version names this signing scheme, unchanged since registry 2.0.0.
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

    /// @notice The latest block with an event recording `weightsDigest` (a checkpoint
    /// or final weights), 0 if none; its events link to earlier ones.
    function latestWeightsBlock(bytes32 weightsDigest) external view returns (uint64);

    /// @notice The latest block with an event recording `tensorRoot`, 0 if none (and
    /// for the zero root).
    function latestTensorRootBlock(bytes32 tensorRoot) external view returns (uint64);

    /// @notice The latest block that started a run naming `runId` as a parent, 0 if none;
    /// its `RunStarted` events link to earlier children.
    function latestChildBlock(bytes32 runId) external view returns (uint64);

    /// @notice How many runs were ever revoked.
    function revokedRunCount() external view returns (uint64);

    /// @notice Whether the artifact `digest` was revoked.
    function isArtifactRevoked(bytes32 digest) external view returns (bool);

    /// @notice The block of the `ArtifactRevoked` event of `digest`, 0 if not revoked.
    function artifactRevokedBlock(bytes32 digest) external view returns (uint64);

    /// @notice The block of the latest `ReplayAttested` event of run `runId`, 0 if none.
    function latestReplayBlock(bytes32 runId) external view returns (uint64);

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
