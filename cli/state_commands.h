#pragma once

#include <string>
#include <vector>

// The ringctl commands about the prefill-to-decode state. Each takes the arguments after its
// name and returns the exit code (0 ok, 1 failure, 2 usage error).
namespace ringserve::cli {

// ringctl state-size --model DIR --tokens N [--json]: the state of one sequence of N tokens
// (linear states and KV) beside a model of the same shape with every layer softmax attention.
// DIR needs only a config.json.
int RunStateSize(const std::vector<std::string>& args);

// ringctl bench-transfer --model DIR [--json] [--tokens 4096,32768,131072] [--reps 3]: moves
// states of each size over the gRPC stream to a receiver process (this binary re-run with
// --serve), beside a loopback TCP probe of the same bytes between the same processes, memcpy,
// and the in-process transport; prints throughput and the goals (gRPC >= 0.7 of TCP, in-process
// >= 0.5 of memcpy). DIR needs only a config.json.
int RunBenchTransfer(const std::vector<std::string>& args);

}  // namespace ringserve::cli
