#include "common/state/in_process.h"

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::state {

absl::StatusOr<TransferResult> InProcessStateSender::Send(const TransferJob& job,
                                                          absl::Time deadline) {
  if (job.decode_address != address_) {
    return absl::NotFoundError(absl::StrCat("no in-process decode worker at '", job.decode_address,
                                            "'; this process hosts '", address_, "'"));
  }
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(const internal::v1::StateManifest manifest,
                   BuildJobManifest(layout_, job, {kv_chunk_tokens_, true}));
  ASSIGN_OR_RETURN(std::unique_ptr<InboundTransfer> transfer, table_->BeginTransfer(manifest));
  PieceReader reader(layout_, *job.state, manifest, kPieceBytes, job.memory);
  Piece piece;
  for (;;) {
    absl::StatusOr<bool> more = reader.Next(&piece);
    if (!more.ok()) {
      transfer->Fail(more.status());
      return more.status();
    }
    if (!*more) break;
    if (piece.offset == 0 && absl::Now() > deadline) {
      const absl::Status late = absl::DeadlineExceededError(
          absl::StrCat("the transfer of request '", job.request_id, "' passed its deadline at ",
                       DescribeSegment(manifest, static_cast<int>(piece.segment))));
      transfer->Fail(late);
      return late;
    }
    uint64_t offset = piece.offset;
    for (size_t i = 0; i < piece.chunks.size(); ++i) {
      RETURN_IF_ERROR(
          transfer->Consume(piece.segment, offset, piece.chunks[i],
                            i + 1 == piece.chunks.size() ? piece.checksum : std::nullopt));
      offset += piece.chunks[i].size();
    }
  }
  RETURN_IF_ERROR(transfer->Finish());
  return TransferResult{transfer->bytes_received(), absl::Now() - start};
}

}  // namespace ringserve::state
