// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IProvenanceRegistry} from "./IProvenanceRegistry.sol";

/// @title ProvenanceRegistry
/// @notice Append-only registry of training runs; see {IProvenanceRegistry}.
/// @dev Storage per run: one packed slot (committer, start time, status, revoked),
/// the manifest digest, and the checkpoint root once finalized. Each recorded
/// weights digest and tensor root costs one slot, plus one for a checkpoint's step.
contract ProvenanceRegistry is IProvenanceRegistry, AccessControl {
    /// @notice Role allowed to start runs.
    bytes32 public constant COMMITTER_ROLE = keccak256("COMMITTER_ROLE");

    /// @notice Version of the storage and event layout.
    string public constant VERSION = "1.0.0";

    /// @dev A digest's record; `stepPlusOne == 0` marks final weights.
    struct WeightsRef {
        bytes32 runId;
        uint64 stepPlusOne;
    }

    mapping(bytes32 runId => Run) private _runs;
    mapping(bytes32 weightsDigest => WeightsRef) private _byWeights;
    mapping(bytes32 tensorRoot => WeightsRef) private _byTensorRoot;

    /// @param admin account given the admin role and the committer role
    constructor(address admin) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(COMMITTER_ROLE, admin);
    }

    /// @inheritdoc IProvenanceRegistry
    function startRun(bytes32 manifestDigest, Parent[] calldata parents)
        external
        onlyRole(COMMITTER_ROLE)
        returns (bytes32 runId)
    {
        if (manifestDigest == bytes32(0)) revert RegistryZeroDigest();
        runId = computeRunId(msg.sender, manifestDigest);
        Run storage run = _runs[runId];
        if (run.status != Status.None) revert RegistryRunExists(runId);
        for (uint256 i = 0; i < parents.length; ++i) {
            bytes32 parentId = parents[i].runId;
            if (_runs[parentId].status == Status.None) revert RegistryUnknownParent(parentId);
            if (parents[i].relation == Relation.None) revert RegistryInvalidRelation(parentId);
        }
        run.committer = msg.sender;
        run.startedAt = uint64(block.timestamp);
        run.status = Status.Running;
        run.manifestDigest = manifestDigest;
        emit RunStarted(runId, msg.sender, manifestDigest, parents);
    }

    /// @inheritdoc IProvenanceRegistry
    function commitCheckpoint(
        bytes32 runId,
        uint64 step,
        bytes32 weightsDigest,
        bytes32 tensorRoot,
        bytes32 metricsDigest
    ) external onlyRole(COMMITTER_ROLE) {
        _requireRunning(runId);
        if (weightsDigest == bytes32(0)) revert RegistryZeroDigest();
        if (step == type(uint64).max) revert RegistryStepOutOfRange(step);
        uint64 stepPlusOne = step + 1;
        WeightsRef storage ref = _byWeights[weightsDigest];
        if (ref.runId == runId && ref.stepPlusOne == stepPlusOne) {
            revert RegistryCheckpointExists(runId, step);
        }
        _recordCheckpoint(ref, runId, stepPlusOne);
        if (tensorRoot != bytes32(0)) _recordCheckpoint(_byTensorRoot[tensorRoot], runId, stepPlusOne);
        emit CheckpointCommitted(runId, step, weightsDigest, tensorRoot, metricsDigest);
    }

    /// @inheritdoc IProvenanceRegistry
    function finalizeRun(
        bytes32 runId,
        bytes32 weightsDigest,
        bytes32 tensorRoot,
        bytes32 metricsDigest,
        bytes32 checkpointRoot,
        uint64 checkpointCount
    ) external onlyRole(COMMITTER_ROLE) {
        Run storage run = _requireRunning(runId);
        if (weightsDigest == bytes32(0)) revert RegistryZeroDigest();
        run.status = Status.Finalized;
        if (checkpointRoot != bytes32(0)) run.checkpointRoot = checkpointRoot;
        _recordFinal(_byWeights[weightsDigest], runId);
        if (tensorRoot != bytes32(0)) _recordFinal(_byTensorRoot[tensorRoot], runId);
        emit RunFinalized(
            runId, weightsDigest, tensorRoot, metricsDigest, checkpointRoot, checkpointCount
        );
    }

    /// @inheritdoc IProvenanceRegistry
    function markFailed(bytes32 runId, string calldata reason) external {
        Run storage run = _requireRunning(runId);
        run.status = Status.Failed;
        emit RunFailed(runId, reason);
    }

    /// @inheritdoc IProvenanceRegistry
    function revokeRun(bytes32 runId, string calldata reason) external {
        Run storage run = _runs[runId];
        if (run.status == Status.None) revert RegistryUnknownRun(runId);
        if (msg.sender != run.committer && !hasRole(DEFAULT_ADMIN_ROLE, msg.sender)) {
            revert RegistryNotAllowedToRevoke(runId, msg.sender);
        }
        if (run.revoked) revert RegistryRunRevoked(runId);
        run.revoked = true;
        emit RunRevoked(runId, msg.sender, reason);
    }

    /// @inheritdoc IProvenanceRegistry
    function getRun(bytes32 runId) external view returns (Run memory) {
        return _runs[runId];
    }

    /// @inheritdoc IProvenanceRegistry
    function findByWeights(bytes32 weightsDigest) external view returns (WeightsRecord memory) {
        return _toRecord(_byWeights[weightsDigest]);
    }

    /// @inheritdoc IProvenanceRegistry
    function findByTensorRoot(bytes32 tensorRoot) external view returns (WeightsRecord memory) {
        return _toRecord(_byTensorRoot[tensorRoot]);
    }

    /// @inheritdoc IProvenanceRegistry
    function computeRunId(address committer, bytes32 manifestDigest)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(committer, manifestDigest));
    }

    /// @inheritdoc IProvenanceRegistry
    function version() external pure returns (string memory) {
        return VERSION;
    }

    /// @dev The run, which must exist, be running, and belong to the caller.
    function _requireRunning(bytes32 runId) private view returns (Run storage run) {
        run = _runs[runId];
        if (run.status == Status.None) revert RegistryUnknownRun(runId);
        if (run.committer != msg.sender) revert RegistryNotRunCommitter(runId, msg.sender);
        if (run.status != Status.Running) revert RegistryRunNotRunning(runId, run.status);
    }

    /// @dev First record wins: a digest already recorded (by any run) is left as it is.
    function _recordCheckpoint(WeightsRef storage ref, bytes32 runId, uint64 stepPlusOne) private {
        if (ref.runId != bytes32(0)) return;
        ref.runId = runId;
        ref.stepPlusOne = stepPlusOne;
    }

    /// @dev Final weights take over a checkpoint record of the same run, never another run's.
    function _recordFinal(WeightsRef storage ref, bytes32 runId) private {
        if (ref.runId == bytes32(0)) {
            ref.runId = runId;
        } else if (ref.runId == runId && ref.stepPlusOne != 0) {
            ref.stepPlusOne = 0;
        }
    }

    function _toRecord(WeightsRef storage ref) private view returns (WeightsRecord memory) {
        uint64 stepPlusOne = ref.stepPlusOne;
        return WeightsRecord({
            runId: ref.runId,
            isFinal: ref.runId != bytes32(0) && stepPlusOne == 0,
            step: stepPlusOne == 0 ? 0 : stepPlusOne - 1
        });
    }
}
