// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";
import {IProvenanceRegistry} from "./IProvenanceRegistry.sol";

/// @title ProvenanceRegistry
/// @notice Append-only registry of training runs; see {IProvenanceRegistry}.
/// @dev Storage: one packed slot per run (committer, status, revoked, first and latest
/// event blocks), one final commitment, and the latest block recording each weights
/// digest and tensor root. The events are the record; storage only points at them.
contract ProvenanceRegistry is IProvenanceRegistry, AccessControl, EIP712, Nonces {
    /// @notice Role allowed to start runs and extend its own runs.
    bytes32 public constant COMMITTER_ROLE = keccak256("COMMITTER_ROLE");

    /// @notice Version of the storage and event layout.
    string public constant VERSION = "3.0.0";

    /// @notice EIP-712 type hash of a signed call.
    bytes32 public constant SIGNED_CALL_TYPEHASH =
        keccak256("SignedCall(address signer,uint256 nonce,uint256 deadline,bytes data)");

    /// @dev The run's packed slot (32 bytes); `finalCommitment` is a second slot written at
    /// finalization. Blocks fit 40 bits for 35,000 years of 1-second blocks.
    struct RunSlot {
        address committer;
        Status status;
        bool revoked;
        uint40 startBlock;
        uint40 lastBlock;
    }

    mapping(bytes32 runId => RunSlot) private _runs;
    mapping(bytes32 runId => bytes32) private _finalCommitments;
    mapping(bytes32 weightsDigest => uint256 blockNumber) private _weightsBlocks;
    mapping(bytes32 tensorRoot => uint256 blockNumber) private _tensorBlocks;
    mapping(bytes32 parentId => uint256 blockNumber) private _childBlocks;
    mapping(bytes32 runId => uint256 blockNumber) private _runRevocationBlocks;
    uint256 private _revokedRuns;
    mapping(bytes32 digest => uint256 blockNumber) private _artifactRevocationBlocks;
    mapping(bytes32 runId => uint256 blockNumber) private _replayBlocks;

    /// @dev The signer of the signed call being executed, for this transaction only.
    address private transient _signedCaller;

    /// @param admin account given the admin role and the committer role
    constructor(address admin) EIP712("ProvenanceRegistry", "2") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(COMMITTER_ROLE, admin);
    }

    // -- writes -------------------------------------------------------------------

    /// @inheritdoc IProvenanceRegistry
    function startRun(bytes32 manifestDigest, Parent[] calldata parents)
        external
        onlyRole(COMMITTER_ROLE)
        returns (bytes32 runId)
    {
        return _start(_msgSender(), manifestDigest, parents);
    }

    /// @inheritdoc IProvenanceRegistry
    function startRuns(StartRequest[] calldata requests)
        external
        onlyRole(COMMITTER_ROLE)
        returns (bytes32[] memory runIds)
    {
        if (requests.length == 0) revert RegistryEmptyBatch();
        address committer = _msgSender();
        runIds = new bytes32[](requests.length);
        for (uint256 i = 0; i < requests.length; ++i) {
            runIds[i] = _start(committer, requests[i].manifestDigest, requests[i].parents);
        }
    }

    /// @inheritdoc IProvenanceRegistry
    function commitCheckpoint(bytes32 runId, Checkpoint calldata checkpoint)
        external
        onlyRole(COMMITTER_ROLE)
    {
        _checkpoint(_msgSender(), runId, checkpoint);
    }

    /// @inheritdoc IProvenanceRegistry
    function commitCheckpoints(CheckpointRequest[] calldata requests)
        external
        onlyRole(COMMITTER_ROLE)
    {
        if (requests.length == 0) revert RegistryEmptyBatch();
        address committer = _msgSender();
        for (uint256 i = 0; i < requests.length; ++i) {
            _checkpoint(committer, requests[i].runId, requests[i].checkpoint);
        }
    }

    /// @inheritdoc IProvenanceRegistry
    function finalizeRun(bytes32 runId, FinalRecord calldata record)
        external
        onlyRole(COMMITTER_ROLE)
    {
        _finalize(_msgSender(), runId, record);
    }

    /// @inheritdoc IProvenanceRegistry
    function finalizeRuns(FinalizeRequest[] calldata requests) external onlyRole(COMMITTER_ROLE) {
        if (requests.length == 0) revert RegistryEmptyBatch();
        address committer = _msgSender();
        for (uint256 i = 0; i < requests.length; ++i) {
            _finalize(committer, requests[i].runId, requests[i].record);
        }
    }

    /// @inheritdoc IProvenanceRegistry
    function markFailed(bytes32 runId, string calldata reason) external {
        RunSlot storage run = _requireRunning(_msgSender(), runId);
        uint64 previousRunBlock = run.lastBlock;
        run.status = Status.Failed;
        run.lastBlock = uint40(block.number);
        emit RunFailed(runId, reason, previousRunBlock);
    }

    /// @inheritdoc IProvenanceRegistry
    function revokeRun(bytes32 runId, string calldata reason) external {
        address sender = _msgSender();
        RunSlot storage run = _runs[runId];
        if (run.status == Status.None) revert RegistryUnknownRun(runId);
        if (sender != run.committer && !hasRole(DEFAULT_ADMIN_ROLE, sender)) {
            revert RegistryNotAllowedToRevoke(runId, sender);
        }
        if (run.revoked) revert RegistryRunRevoked(runId);
        run.revoked = true;
        _runRevocationBlocks[runId] = block.number;
        ++_revokedRuns;
        emit RunRevoked(runId, sender, reason);
    }

    /// @inheritdoc IProvenanceRegistry
    function revokeArtifact(bytes32 digest, string calldata reason)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (digest == bytes32(0)) revert RegistryZeroDigest();
        if (_artifactRevocationBlocks[digest] != 0) revert RegistryArtifactRevoked(digest);
        _artifactRevocationBlocks[digest] = block.number;
        emit ArtifactRevoked(digest, _msgSender(), reason);
    }

    /// @inheritdoc IProvenanceRegistry
    function attestReplay(
        bytes32 runId,
        uint64 fromStep,
        uint64 toStep,
        bool reproduced,
        bytes32 reportDigest
    ) external {
        if (_runs[runId].status == Status.None) revert RegistryUnknownRun(runId);
        if (fromStep > toStep) revert RegistryInvalidStepRange(fromStep, toStep);
        if (reportDigest == bytes32(0)) revert RegistryZeroDigest();
        uint64 previousBlock = uint64(_replayBlocks[runId]);
        _replayBlocks[runId] = block.number;
        emit ReplayAttested(
            runId, _msgSender(), fromStep, toStep, reproduced, reportDigest, previousBlock
        );
    }

    /// @inheritdoc IProvenanceRegistry
    function executeSigned(
        address signer,
        uint256 nonce,
        uint256 deadline,
        bytes calldata data,
        bytes calldata signature
    ) external returns (bytes memory result) {
        if (_signedCaller != address(0)) revert RegistryNestedSignedCall();
        if (block.timestamp > deadline) revert RegistrySignatureExpired(deadline);
        bytes32 structHash =
            keccak256(abi.encode(SIGNED_CALL_TYPEHASH, signer, nonce, deadline, keccak256(data)));
        (address recovered, ECDSA.RecoverError failure,) =
            ECDSA.tryRecover(_hashTypedDataV4(structHash), signature);
        if (failure != ECDSA.RecoverError.NoError || recovered != signer) {
            revert RegistryInvalidSigner(signer, recovered);
        }
        _useCheckedNonce(signer, nonce);
        _signedCaller = signer;
        bool ok;
        (ok, result) = address(this).delegatecall(data);
        _signedCaller = address(0);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
    }

    // -- views ----------------------------------------------------------------------

    /// @inheritdoc IProvenanceRegistry
    function getRun(bytes32 runId) external view returns (Run memory) {
        RunSlot storage run = _runs[runId];
        return Run({
            committer: run.committer,
            status: run.status,
            revoked: run.revoked,
            startBlock: run.startBlock,
            lastBlock: run.lastBlock,
            revokedBlock: uint64(_runRevocationBlocks[runId]),
            finalCommitment: _finalCommitments[runId]
        });
    }

    /// @inheritdoc IProvenanceRegistry
    function latestWeightsBlock(bytes32 weightsDigest) external view returns (uint64) {
        return uint64(_weightsBlocks[weightsDigest]);
    }

    /// @inheritdoc IProvenanceRegistry
    function latestTensorRootBlock(bytes32 tensorRoot) external view returns (uint64) {
        return uint64(_tensorBlocks[tensorRoot]);
    }

    /// @inheritdoc IProvenanceRegistry
    function latestChildBlock(bytes32 runId) external view returns (uint64) {
        return uint64(_childBlocks[runId]);
    }

    /// @inheritdoc IProvenanceRegistry
    function revokedRunCount() external view returns (uint64) {
        return uint64(_revokedRuns);
    }

    /// @inheritdoc IProvenanceRegistry
    function isArtifactRevoked(bytes32 digest) external view returns (bool) {
        return _artifactRevocationBlocks[digest] != 0;
    }

    /// @inheritdoc IProvenanceRegistry
    function artifactRevokedBlock(bytes32 digest) external view returns (uint64) {
        return uint64(_artifactRevocationBlocks[digest]);
    }

    /// @inheritdoc IProvenanceRegistry
    function latestReplayBlock(bytes32 runId) external view returns (uint64) {
        return uint64(_replayBlocks[runId]);
    }

    /// @inheritdoc IProvenanceRegistry
    function isFinalRecord(bytes32 runId, FinalRecord calldata record)
        public
        view
        returns (bool)
    {
        bytes32 stored = _finalCommitments[runId];
        return stored != bytes32(0) && stored == keccak256(abi.encode(record));
    }

    /// @inheritdoc IProvenanceRegistry
    function verifyCheckpoint(
        bytes32 runId,
        FinalRecord calldata record,
        Checkpoint calldata checkpoint,
        bytes32[] calldata proof
    ) external view returns (bool) {
        return isFinalRecord(runId, record)
            && MerkleProof.verifyCalldata(proof, record.checkpointRoot, checkpointLeaf(checkpoint));
    }

    /// @inheritdoc IProvenanceRegistry
    function checkpointLeaf(Checkpoint calldata checkpoint) public pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(
                    abi.encode(
                        checkpoint.step,
                        checkpoint.weightsDigest,
                        checkpoint.tensorRoot,
                        checkpoint.metricsDigest
                    )
                )
            )
        );
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

    // -- internals ------------------------------------------------------------------

    /// @dev The signer during a signed call, else the transaction's caller.
    function _msgSender() internal view override returns (address) {
        address signer = _signedCaller;
        return signer == address(0) ? msg.sender : signer;
    }

    function _start(address committer, bytes32 manifestDigest, Parent[] calldata parents)
        private
        returns (bytes32 runId)
    {
        if (manifestDigest == bytes32(0)) revert RegistryZeroDigest();
        runId = computeRunId(committer, manifestDigest);
        RunSlot storage run = _runs[runId];
        if (run.status != Status.None) revert RegistryRunExists(runId);
        uint64[] memory previousChildBlocks = new uint64[](parents.length);
        for (uint256 i = 0; i < parents.length; ++i) {
            bytes32 parentId = parents[i].runId;
            if (_runs[parentId].status == Status.None) revert RegistryUnknownParent(parentId);
            if (parents[i].relation == Relation.None) revert RegistryInvalidRelation(parentId);
            uint256 previous = _childBlocks[parentId];
            previousChildBlocks[i] = uint64(previous);
            if (previous != block.number) _childBlocks[parentId] = block.number;
        }
        _runs[runId] = RunSlot({
            committer: committer,
            status: Status.Running,
            revoked: false,
            startBlock: uint40(block.number),
            lastBlock: uint40(block.number)
        });
        emit RunStarted(runId, committer, manifestDigest, parents, previousChildBlocks);
    }

    function _checkpoint(address committer, bytes32 runId, Checkpoint calldata checkpoint)
        private
    {
        RunSlot storage run = _requireRunning(committer, runId);
        if (checkpoint.weightsDigest == bytes32(0)) revert RegistryZeroDigest();
        uint64 previousRunBlock = _touch(run);
        (uint64 previousWeightsBlock, uint64 previousTensorBlock) =
            _link(checkpoint.weightsDigest, checkpoint.tensorRoot);
        emit CheckpointCommitted(
            runId,
            checkpoint.weightsDigest,
            checkpoint.tensorRoot,
            checkpoint.step,
            checkpoint.metricsDigest,
            previousRunBlock,
            previousWeightsBlock,
            previousTensorBlock
        );
    }

    function _finalize(address committer, bytes32 runId, FinalRecord calldata record) private {
        RunSlot storage run = _requireRunning(committer, runId);
        if (record.weightsDigest == bytes32(0)) revert RegistryZeroDigest();
        run.status = Status.Finalized;
        uint64 previousRunBlock = _touch(run);
        _finalCommitments[runId] = keccak256(abi.encode(record));
        (uint64 previousWeightsBlock, uint64 previousTensorBlock) =
            _link(record.weightsDigest, record.tensorRoot);
        emit RunFinalized(
            runId,
            record.weightsDigest,
            record.tensorRoot,
            record.metricsDigest,
            record.checkpointRoot,
            record.checkpointCount,
            previousRunBlock,
            previousWeightsBlock,
            previousTensorBlock
        );
    }

    /// @dev Move the run's latest-event block to this block; the block it was before.
    function _touch(RunSlot storage run) private returns (uint64 previousRunBlock) {
        previousRunBlock = run.lastBlock;
        if (previousRunBlock != block.number) run.lastBlock = uint40(block.number);
    }

    /// @dev Make this block the latest recording `weightsDigest` and (unless zero)
    /// `tensorRoot`; the blocks that were latest before. A write that would not change
    /// the stored value is skipped.
    function _link(bytes32 weightsDigest, bytes32 tensorRoot)
        private
        returns (uint64 previousWeightsBlock, uint64 previousTensorBlock)
    {
        previousWeightsBlock = uint64(_weightsBlocks[weightsDigest]);
        if (previousWeightsBlock != block.number) _weightsBlocks[weightsDigest] = block.number;
        if (tensorRoot != bytes32(0)) {
            previousTensorBlock = uint64(_tensorBlocks[tensorRoot]);
            if (previousTensorBlock != block.number) _tensorBlocks[tensorRoot] = block.number;
        }
    }

    /// @dev The run, which must exist, be running, and belong to `committer`.
    function _requireRunning(address committer, bytes32 runId)
        private
        view
        returns (RunSlot storage run)
    {
        run = _runs[runId];
        if (run.status == Status.None) revert RegistryUnknownRun(runId);
        if (run.committer != committer) revert RegistryNotRunCommitter(runId, committer);
        if (run.status != Status.Running) revert RegistryRunNotRunning(runId, run.status);
    }
}
