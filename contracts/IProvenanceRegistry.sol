// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IProvenanceRegistry
/// @notice Append-only record of machine-learning training runs. Each run is
/// identified by a content-derived id, `keccak256(abi.encode(committer, manifestDigest))`,
/// and records the digests of its manifest, of every checkpoint and of its final
/// weights. Digests are the sha2-256 multihash digests of IPFS CIDs (see the
/// manifest's `digests` field for the scheme names) or tensor Merkle roots;
/// the bytes themselves live off chain.
/// @dev Details that nothing on chain needs to read are carried by events only;
/// storage holds what a view must answer in one call.
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

    /// @notice What storage holds for a run.
    /// @param committer account that started the run and alone may extend it
    /// @param startedAt block time of `startRun`
    /// @param status life-cycle state
    /// @param revoked true once revoked (independent of `status`)
    /// @param manifestDigest digest of the run's manifest CID
    /// @param checkpointRoot Merkle root over the run's checkpoints, set at finalization
    struct Run {
        address committer;
        uint64 startedAt;
        Status status;
        bool revoked;
        bytes32 manifestDigest;
        bytes32 checkpointRoot;
    }

    /// @notice Where a weights digest (file CID digest or tensor root) was recorded.
    /// @param runId the run, or zero when the digest is unknown
    /// @param isFinal true for the run's final weights
    /// @param step the checkpoint's step when `isFinal` is false
    struct WeightsRecord {
        bytes32 runId;
        bool isFinal;
        uint64 step;
    }

    /// @notice A zero digest was given where a digest is required.
    error RegistryZeroDigest();
    /// @notice A run with this id exists already (same committer, same manifest).
    error RegistryRunExists(bytes32 runId);
    /// @notice No run has this id.
    error RegistryUnknownRun(bytes32 runId);
    /// @notice A parent named at start does not exist, or is the run itself.
    error RegistryUnknownParent(bytes32 parentId);
    /// @notice A parent was given with relation `None`.
    error RegistryInvalidRelation(bytes32 parentId);
    /// @notice Only the run's committer may extend or end it.
    error RegistryNotRunCommitter(bytes32 runId, address account);
    /// @notice The run is not running (it was finalized or marked failed).
    error RegistryRunNotRunning(bytes32 runId, Status status);
    /// @notice This run recorded this weights digest at this step already.
    /// @dev Detected through the weights index, which keeps the first record of a digest:
    /// a re-send is caught when that first record is this run at this step. Exact
    /// once-only delivery is the client's job (its journal), not worth a slot per step.
    error RegistryCheckpointExists(bytes32 runId, uint64 step);
    /// @notice The step is out of range (the largest uint64 is reserved).
    error RegistryStepOutOfRange(uint64 step);
    /// @notice The run was revoked already.
    error RegistryRunRevoked(bytes32 runId);
    /// @notice Only the run's committer or an admin may revoke it.
    error RegistryNotAllowedToRevoke(bytes32 runId, address account);

    /// @notice A run was started.
    event RunStarted(
        bytes32 indexed runId, address indexed committer, bytes32 manifestDigest, Parent[] parents
    );
    /// @notice A checkpoint of a running run was recorded.
    event CheckpointCommitted(
        bytes32 indexed runId,
        uint64 indexed step,
        bytes32 weightsDigest,
        bytes32 tensorRoot,
        bytes32 metricsDigest
    );
    /// @notice A run was finalized with its final weights.
    event RunFinalized(
        bytes32 indexed runId,
        bytes32 weightsDigest,
        bytes32 tensorRoot,
        bytes32 metricsDigest,
        bytes32 checkpointRoot,
        uint64 checkpointCount
    );
    /// @notice A run ended in failure.
    event RunFailed(bytes32 indexed runId, string reason);
    /// @notice A run was revoked; its descendants are tainted.
    event RunRevoked(bytes32 indexed runId, address indexed revoker, string reason);

    /// @notice Start a run. The caller must hold the committer role.
    /// @param manifestDigest digest of the manifest CID (config, code, data, environment)
    /// @param parents runs this one derives from, with the relation to each
    /// @return runId `keccak256(abi.encode(msg.sender, manifestDigest))`
    function startRun(bytes32 manifestDigest, Parent[] calldata parents)
        external
        returns (bytes32 runId);

    /// @notice Record a checkpoint of a running run. Only the run's committer may.
    /// @param runId the run
    /// @param step training step or epoch of the checkpoint
    /// @param weightsDigest digest of the checkpoint file's CID
    /// @param tensorRoot Merkle root of the checkpoint's tensors
    /// @param metricsDigest digest of the metrics document's CID (zero if none)
    function commitCheckpoint(
        bytes32 runId,
        uint64 step,
        bytes32 weightsDigest,
        bytes32 tensorRoot,
        bytes32 metricsDigest
    ) external;

    /// @notice Finalize a running run with its final weights. Only the run's committer may.
    /// @param runId the run
    /// @param weightsDigest digest of the final model file's CID
    /// @param tensorRoot Merkle root of the final tensors
    /// @param metricsDigest digest of the final metrics document's CID
    /// @param checkpointRoot Merkle root over the run's checkpoints (zero if none)
    /// @param checkpointCount number of checkpoints under `checkpointRoot`
    function finalizeRun(
        bytes32 runId,
        bytes32 weightsDigest,
        bytes32 tensorRoot,
        bytes32 metricsDigest,
        bytes32 checkpointRoot,
        uint64 checkpointCount
    ) external;

    /// @notice Mark a running run as failed. Only the run's committer may.
    function markFailed(bytes32 runId, string calldata reason) external;

    /// @notice Revoke a run. Its committer or an admin may, once.
    function revokeRun(bytes32 runId, string calldata reason) external;

    /// @notice The stored record of a run (status `None` when unknown).
    function getRun(bytes32 runId) external view returns (Run memory);

    /// @notice The run and checkpoint that a weights file CID digest was recorded for.
    function findByWeights(bytes32 weightsDigest) external view returns (WeightsRecord memory);

    /// @notice The run and checkpoint that a tensor Merkle root was recorded for.
    function findByTensorRoot(bytes32 tensorRoot) external view returns (WeightsRecord memory);

    /// @notice The id a run started by `committer` with `manifestDigest` has.
    function computeRunId(address committer, bytes32 manifestDigest)
        external
        pure
        returns (bytes32);

    /// @notice Version of this registry's storage and event layout.
    function version() external pure returns (string memory);
}
