// ringctl commands about the prefill-to-decode state: state-size and bench-transfer.
#include "cli/state_commands.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "cli/common.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"
#include "common/model/config.h"
#include "common/model/sequence_state.h"
#include "common/rpc/status.h"
#include "common/state/format.h"
#include "common/state/grpc_stream.h"
#include "common/state/in_process.h"
#include "common/state/reservations.h"
#include "common/worker/model_state.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/sampling.h"

namespace ringserve::cli {
namespace {

// Both bench processes load the same config; the fingerprint only has to agree.
constexpr char kBenchFingerprint[] = "bench-transfer";
constexpr double kGrpcGoal = 0.7;       // of loopback TCP
constexpr double kInProcessGoal = 0.5;  // of memcpy

std::string HumanBytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return absl::StrFormat("%.2f GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return absl::StrFormat("%.2f MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return absl::StrFormat("%.2f KiB", b / 1024.0);
  return absl::StrCat(bytes, " B");
}

absl::Status StateSize(const std::vector<std::string>& args) {
  base::FlagSet flags("ringctl state-size");
  flags.String("model", "", "checkpoint directory (only config.json is read)");
  flags.String("tokens", "", "tokens in the sequence");
  flags.Bool("json", false, "print JSON");
  RETURN_IF_ERROR(flags.Parse(args));
  if (flags.Get("model").empty()) return absl::InvalidArgumentError("--model is required");
  if (flags.Get("tokens").empty()) return absl::InvalidArgumentError("--tokens is required");
  ASSIGN_OR_RETURN(const int64_t tokens, flags.GetInt("tokens"));
  if (tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--tokens ", tokens, " must be at least 1"));
  }
  ASSIGN_OR_RETURN(const model::ModelConfig config,
                   model::ModelConfig::FromDirectory(flags.Get("model")));
  const state::StateSize size = state::ComputeStateSize(worker::LayoutOf(config), tokens);
  const double ratio =
      static_cast<double>(size.all_softmax_kv_bytes) / static_cast<double>(size.total());
  if (flags.GetBool("json")) {
    std::printf(
        "{\"tokens\": %ld, \"layers\": %ld, \"linear_layers\": %ld, \"softmax_layers\": %ld, "
        "\"linear_state_bytes\": %lu, \"kv_bytes\": %lu, \"total_bytes\": %lu, "
        "\"all_softmax_bytes\": %lu, \"all_softmax_over_hybrid\": %.4f}\n",
        tokens, config.num_hidden_layers, config.num_linear_layers(), config.num_softmax_layers(),
        size.linear_bytes, size.kv_bytes, size.total(), size.all_softmax_kv_bytes, ratio);
    return absl::OkStatus();
  }
  std::printf("model %s: %ld layers (%ld linear, %ld softmax), %ld tokens\n",
              flags.Get("model").c_str(), config.num_hidden_layers, config.num_linear_layers(),
              config.num_softmax_layers(), tokens);
  std::printf("  linear state (fp32)       %12s\n", HumanBytes(size.linear_bytes).c_str());
  std::printf("  KV (bf16)                 %12s\n", HumanBytes(size.kv_bytes).c_str());
  std::printf("  hybrid total              %12s\n", HumanBytes(size.total()).c_str());
  std::printf("  all-softmax, same shape   %12s\n", HumanBytes(size.all_softmax_kv_bytes).c_str());
  std::printf("  all-softmax / hybrid      %11.2fx\n", ratio);
  return absl::OkStatus();
}

// ---- bench-transfer ----

absl::Status Errno(const std::string& what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

bool WriteAll(int fd, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, void* data, size_t bytes) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n <= 0) return false;
    p += n;
    bytes -= static_cast<size_t>(n);
  }
  return true;
}

// The linear states and the K and V of tokens [0, tokens) of `state`.
std::vector<model::Span> StateSpans(const model::SequenceState& state, int64_t tokens) {
  std::vector<model::Span> spans;
  for (int64_t i = 0; i < state.num_linear(); ++i) {
    spans.push_back({state.linear_state(i), state.linear_state_bytes()});
  }
  for (int64_t i = 0; i < state.num_softmax(); ++i) {
    for (bool value : {false, true}) {
      for (const model::Span& s : state.KvSpans(i, value, 0, tokens)) spans.push_back(s);
    }
  }
  return spans;
}

// A state whose memory is committed (touched), as a decode worker's reserved memory is.
absl::StatusOr<std::unique_ptr<model::SequenceState>> CommittedState(
    const model::ModelConfig& config, kernels::Backend* backend, int64_t capacity) {
  ASSIGN_OR_RETURN(auto state, model::SequenceState::Create(config, backend, capacity));
  for (const model::Span& s : StateSpans(*state, capacity)) std::memset(s.data, 0, s.bytes);
  return state;
}

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The receiver process (bench-transfer --serve): a Decode service with Reserve and PushState
// over a ReservationTable, which frees the states that arrived at the next Reserve (outside the
// timed transfers), and a loopback TCP probe that reads [u64 length][bytes] into memory and
// answers one byte. Prints "ports GRPC TCP" and runs until its stdin closes.
class BenchReceiver : public state::DecodeStateService {
 public:
  explicit BenchReceiver(state::ReservationTable* table)
      : DecodeStateService(table, nullptr), table_(table) {}

  grpc::ServerUnaryReactor* Reserve(grpc::CallbackServerContext* context,
                                    const internal::v1::ReserveRequest* request,
                                    internal::v1::ReserveResponse* response) override {
    std::map<std::string, std::string> arrived;
    {
      absl::MutexLock lock(&mu_);
      arrived.swap(arrived_);
    }
    for (const auto& [id, ticket] : arrived) table_->Release(id, ticket).IgnoreError();
    absl::StatusOr<state::Reservation> r =
        table_->Reserve(request->request_id(), request->prompt_tokens(), request->max_tokens(),
                        absl::Milliseconds(request->lease_ms()));
    if (r.ok()) {
      response->set_ticket(r->ticket);
      response->set_epoch(r->epoch);
      absl::MutexLock lock(&mu_);
      tickets_[request->request_id()] = r->ticket;
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(rpc::ToGrpc(r.status()));
    return reactor;
  }

  // The table's listener: a state that arrived is freed at the next Reserve.
  void OnState(const std::string& request_id, const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    auto it = tickets_.find(request_id);
    if (it == tickets_.end()) return;
    if (status.ok()) arrived_[request_id] = std::move(it->second);
    tickets_.erase(it);
  }

 private:
  state::ReservationTable* const table_;
  absl::Mutex mu_;
  std::map<std::string, std::string> tickets_ ABSL_GUARDED_BY(mu_);  // reserved
  std::map<std::string, std::string> arrived_ ABSL_GUARDED_BY(mu_);  // ready, to free
};

void ServeTcpProbe(int fd) {
  std::vector<char> buffer;
  for (;;) {
    uint64_t bytes = 0;
    if (!ReadAll(fd, &bytes, sizeof(bytes))) return;
    if (buffer.size() < bytes) buffer.resize(bytes);  // zero-filled, so committed
    if (!ReadAll(fd, buffer.data(), bytes)) return;
    const char ack = 1;
    if (!WriteAll(fd, &ack, 1)) return;
  }
}

absl::Status Serve(const base::FlagSet& flags) {
  ASSIGN_OR_RETURN(const model::ModelConfig config,
                   model::ModelConfig::FromDirectory(flags.Get("model")));
  ASSIGN_OR_RETURN(const int64_t kv_tokens, flags.GetInt("kv-tokens"));
  kernels::CpuBackend backend(1);
  BenchReceiver* receiver = nullptr;
  state::ReservationTable::Options options;
  options.layout = worker::LayoutOf(config);
  options.model_fingerprint = kBenchFingerprint;
  options.limits = {2, kv_tokens};
  options.factory = [&](int64_t capacity) {
    return worker::ModelState::Wrap(CommittedState(config, &backend, capacity));
  };
  options.listener = [&receiver](const std::string& id, const absl::Status& status) {
    receiver->OnState(id, status);
  };
  ASSIGN_OR_RETURN(auto table, state::ReservationTable::Create(std::move(options)));
  BenchReceiver service(table.get());
  receiver = &service;

  int grpc_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &grpc_port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || grpc_port == 0) {
    return absl::UnavailableError("the bench receiver could not start its gRPC server");
  }

  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return Errno("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return Errno("the TCP probe's socket");
  }
  std::thread probe([listener] {
    for (;;) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      ServeTcpProbe(fd);
      ::close(fd);
    }
  });
  std::printf("ports %d %d\n", grpc_port, ntohs(addr.sin_port));
  std::fflush(stdout);
  std::cin.ignore(std::numeric_limits<std::streamsize>::max());  // until the parent closes stdin
  ::shutdown(listener, SHUT_RDWR);
  probe.join();
  ::close(listener);
  server->Shutdown();
  return absl::OkStatus();
}

// The receiver process, started from this binary.
class ReceiverProcess {
 public:
  static absl::StatusOr<std::unique_ptr<ReceiverProcess>> Spawn(const std::string& model_dir,
                                                                int64_t kv_tokens) {
    int to_child[2], from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0) return Errno("pipe");
    if (::pipe2(from_child, O_CLOEXEC) != 0) return Errno("pipe");
    const std::string kv = absl::StrCat(kv_tokens);
    const pid_t pid = ::fork();
    if (pid < 0) return Errno("fork");
    if (pid == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      ::execl("/proc/self/exe", "ringctl", "bench-transfer", "--serve", "--model",
              model_dir.c_str(), "--kv-tokens", kv.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    std::unique_ptr<ReceiverProcess> child(new ReceiverProcess(pid, to_child[1]));
    FILE* out = ::fdopen(from_child[0], "r");
    const int read = std::fscanf(out, "ports %d %d", &child->grpc_port_, &child->tcp_port_);
    std::fclose(out);
    if (read != 2) {
      return absl::UnavailableError("the bench receiver process did not report its ports");
    }
    return child;
  }

  // Closes the child's stdin, which ends it, and reaps it.
  ~ReceiverProcess() {
    ::close(stdin_);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }

  int grpc_port() const { return grpc_port_; }
  int tcp_port() const { return tcp_port_; }

 private:
  ReceiverProcess(pid_t pid, int stdin_fd) : pid_(pid), stdin_(stdin_fd) {}

  const pid_t pid_;
  const int stdin_;
  int grpc_port_ = 0;
  int tcp_port_ = 0;
};

absl::StatusOr<state::Reservation> RemoteReserve(const std::shared_ptr<grpc::Channel>& channel,
                                                 const std::string& request_id, int64_t tokens) {
  auto stub = internal::v1::Decode::NewStub(channel);
  internal::v1::ReserveRequest request;
  request.set_request_id(request_id);
  request.set_prompt_tokens(static_cast<uint32_t>(tokens));
  request.set_lease_ms(60000);
  internal::v1::ReserveResponse response;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  absl::Notification done;
  grpc::Status status;
  stub->async()->Reserve(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  done.WaitForNotification();
  RETURN_IF_ERROR(rpc::FromGrpc(status));
  return state::Reservation{response.ticket(), absl::InfinitePast(), response.epoch()};
}

// The best (shortest) time over the repetitions of one way to move a state.
struct Best {
  double seconds = std::numeric_limits<double>::infinity();

  void Add(double s) { seconds = std::min(seconds, s); }
  double Gbps(uint64_t bytes) const { return static_cast<double>(bytes) / seconds / 1e9; }
};

struct SizeResult {
  int64_t tokens = 0;
  uint64_t bytes = 0;
  double memcpy_gbps = 0;
  double in_process_gbps = 0;
  double grpc_gbps = 0;
  double tcp_gbps = 0;
};

absl::StatusOr<SizeResult> BenchOneSize(const model::ModelConfig& config, kernels::Backend* backend,
                                        int64_t tokens, int64_t reps,
                                        const state::GrpcSenderOptions& grpc_options,
                                        state::ChannelCache* channels,
                                        const std::string& grpc_address, int tcp_fd) {
  SizeResult result;
  result.tokens = tokens;
  const state::StateLayout layout = worker::LayoutOf(config);
  result.bytes = state::ComputeStateSize(layout, tokens).total();
  ASSIGN_OR_RETURN(auto source, model::SequenceState::Create(config, backend, tokens));
  uint64_t counter = static_cast<uint64_t>(tokens);
  const std::vector<model::Span> spans = StateSpans(*source, tokens);
  for (const model::Span& s : spans) {
    auto* p = static_cast<uint8_t*>(s.data);
    for (size_t i = 0; i < s.bytes; i += 8) {
      const uint64_t bits = kernels::SplitMix64(counter++);
      std::memcpy(p + i, &bits, std::min<size_t>(8, s.bytes - i));
    }
  }
  source->set_position(tokens);

  ASSIGN_OR_RETURN(auto copy, CommittedState(config, backend, tokens));
  const std::vector<model::Span> copy_spans = StateSpans(*copy, tokens);
  Best memcpy_best, in_process_best, grpc_best, tcp_best;
  for (int64_t rep = 0; rep < reps; ++rep) {
    const double start = Now();
    for (size_t i = 0; i < spans.size(); ++i) {
      std::memcpy(copy_spans[i].data, spans[i].data, spans[i].bytes);
    }
    memcpy_best.Add(Now() - start);
  }

  state::ReservationTable::Options options;
  options.layout = layout;
  options.model_fingerprint = kBenchFingerprint;
  options.limits = {1, tokens};
  options.factory = [&](int64_t capacity) {
    return worker::ModelState::Wrap(CommittedState(config, backend, capacity));
  };
  ASSIGN_OR_RETURN(auto table, state::ReservationTable::Create(std::move(options)));
  state::InProcessStateSender in_process(layout, "in-process", table.get());
  state::GrpcStateSender grpc_sender(layout, channels, grpc_options);
  const worker::ModelState source_view(source.get());
  state::TransferJob job;
  job.sender_epoch = 1;
  job.model_fingerprint = kBenchFingerprint;
  job.state = &source_view;
  job.tokens = tokens;
  for (int64_t rep = 0; rep < reps; ++rep) {
    job.request_id = absl::StrCat("bench-", tokens, "-", rep);
    ASSIGN_OR_RETURN(const state::Reservation local,
                     table->Reserve(job.request_id, tokens, 0, absl::Minutes(1)));
    job.ticket = local.ticket;
    job.decode_address = "in-process";
    double start = Now();
    RETURN_IF_ERROR(in_process.Send(job, absl::Now() + absl::Minutes(1)).status());
    in_process_best.Add(Now() - start);
    RETURN_IF_ERROR(table->Release(job.request_id, local.ticket));

    ASSIGN_OR_RETURN(const state::Reservation remote,
                     RemoteReserve(channels->Get(grpc_address), job.request_id, tokens));
    job.ticket = remote.ticket;
    job.decode_address = grpc_address;
    start = Now();
    RETURN_IF_ERROR(grpc_sender.Send(job, absl::Now() + absl::Minutes(1)).status());
    grpc_best.Add(Now() - start);

    start = Now();
    const uint64_t bytes = result.bytes;
    bool sent = WriteAll(tcp_fd, &bytes, sizeof(bytes));
    for (const model::Span& s : spans) sent = sent && WriteAll(tcp_fd, s.data, s.bytes);
    char ack = 0;
    if (!sent || !ReadAll(tcp_fd, &ack, 1)) return Errno("the TCP probe");
    tcp_best.Add(Now() - start);
  }
  result.memcpy_gbps = memcpy_best.Gbps(result.bytes);
  result.in_process_gbps = in_process_best.Gbps(result.bytes);
  result.grpc_gbps = grpc_best.Gbps(result.bytes);
  result.tcp_gbps = tcp_best.Gbps(result.bytes);
  return result;
}

absl::Status BenchTransfer(const std::vector<std::string>& args) {
  // Freed buffers stay in the process instead of going back to the kernel, so gRPC's receive
  // buffers are not faulted in afresh for every message (what a transfer-heavy worker wants).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  base::FlagSet flags("ringctl bench-transfer");
  flags.String("model", "", "checkpoint directory (only config.json is read)");
  flags.String("tokens", "4096,32768,131072", "state sizes in tokens");
  flags.String("reps", "3", "repetitions per size (the best counts)");
  flags.String("piece-bytes", "1048576", "segment bytes per gRPC message");
  flags.Bool("json", false, "print JSON");
  flags.Bool("serve", false, "run as the receiver process (started by bench-transfer itself)");
  flags.String("kv-tokens", "262144", "the receiver's KV capacity in tokens (with --serve)");
  RETURN_IF_ERROR(flags.Parse(args));
  if (flags.Get("model").empty()) return absl::InvalidArgumentError("--model is required");
  if (flags.GetBool("serve")) return Serve(flags);
  ASSIGN_OR_RETURN(const std::vector<int64_t> sizes, flags.GetIntList("tokens"));
  ASSIGN_OR_RETURN(const int64_t reps, flags.GetInt("reps"));
  ASSIGN_OR_RETURN(const int64_t piece_bytes, flags.GetInt("piece-bytes"));
  if (reps < 1) return absl::InvalidArgumentError(absl::StrCat("--reps ", reps, " must be >= 1"));
  if (piece_bytes < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--piece-bytes ", piece_bytes, " must be >= 1"));
  }
  ASSIGN_OR_RETURN(const model::ModelConfig config,
                   model::ModelConfig::FromDirectory(flags.Get("model")));
  int64_t largest = 1;
  for (int64_t t : sizes) {
    if (t < 1 || t > config.max_position_embeddings) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens ", t, " is outside [1, ", config.max_position_embeddings, "]"));
    }
    largest = std::max(largest, t);
  }

  // The receiver starts first, while this process has one thread.
  ASSIGN_OR_RETURN(std::unique_ptr<ReceiverProcess> receiver,
                   ReceiverProcess::Spawn(flags.Get("model"), 2 * largest));
  const int tcp_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(receiver->tcp_port()));
  if (tcp_fd < 0 || ::connect(tcp_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (tcp_fd >= 0) ::close(tcp_fd);
    return Errno("connecting to the TCP probe");
  }
  kernels::CpuBackend backend(1);
  state::ChannelCache channels(grpc::InsecureChannelCredentials());
  const std::string grpc_address = absl::StrCat("127.0.0.1:", receiver->grpc_port());
  state::GrpcSenderOptions grpc_options;
  grpc_options.piece_bytes = static_cast<size_t>(piece_bytes);
  std::vector<SizeResult> results;
  absl::Status status;
  for (int64_t tokens : sizes) {
    absl::StatusOr<SizeResult> r =
        BenchOneSize(config, &backend, tokens, reps, grpc_options, &channels, grpc_address, tcp_fd);
    if (!r.ok()) {
      status = r.status();
      break;
    }
    results.push_back(*r);
  }
  ::close(tcp_fd);
  RETURN_IF_ERROR(status);

  bool grpc_met = true, in_process_met = true;
  for (const SizeResult& r : results) {
    grpc_met = grpc_met && r.grpc_gbps >= kGrpcGoal * r.tcp_gbps;
    in_process_met = in_process_met && r.in_process_gbps >= kInProcessGoal * r.memcpy_gbps;
  }
  if (flags.GetBool("json")) {
    std::vector<std::string> rows;
    for (const SizeResult& r : results) {
      rows.push_back(
          absl::StrFormat("{\"tokens\": %d, \"state_bytes\": %d, \"memcpy_gbps\": %.3f, "
                          "\"in_process_gbps\": %.3f, \"grpc_gbps\": %.3f, \"tcp_gbps\": %.3f, "
                          "\"in_process_over_memcpy\": %.3f, \"grpc_over_tcp\": %.3f}",
                          r.tokens, r.bytes, r.memcpy_gbps, r.in_process_gbps, r.grpc_gbps,
                          r.tcp_gbps, r.in_process_gbps / r.memcpy_gbps, r.grpc_gbps / r.tcp_gbps));
    }
    std::printf(
        "{\"model\": \"%s\", \"reps\": %ld, \"piece_bytes\": %ld, \"results\": [%s], "
        "\"goals\": {\"grpc_over_tcp\": %.1f, \"grpc_met\": %s, \"in_process_over_memcpy\": "
        "%.1f, \"in_process_met\": %s}}\n",
        flags.Get("model").c_str(), reps, piece_bytes, absl::StrJoin(rows, ", ").c_str(), kGrpcGoal,
        grpc_met ? "true" : "false", kInProcessGoal, in_process_met ? "true" : "false");
    return absl::OkStatus();
  }
  std::printf("bench-transfer: %s, %ld linear + %ld softmax layers, best of %ld, %s pieces\n",
              flags.Get("model").c_str(), config.num_linear_layers(), config.num_softmax_layers(),
              reps, HumanBytes(static_cast<uint64_t>(piece_bytes)).c_str());
  std::printf("%8s %12s %11s %11s %6s %11s %11s %6s\n", "tokens", "state", "memcpy", "in-process",
              "/mcpy", "grpc", "tcp", "/tcp");
  for (const SizeResult& r : results) {
    std::printf("%8ld %12s %6.2f GB/s %6.2f GB/s %6.2f %6.2f GB/s %6.2f GB/s %6.2f\n", r.tokens,
                HumanBytes(r.bytes).c_str(), r.memcpy_gbps, r.in_process_gbps,
                r.in_process_gbps / r.memcpy_gbps, r.grpc_gbps, r.tcp_gbps,
                r.grpc_gbps / r.tcp_gbps);
  }
  std::printf("goal: grpc stream >= %.1f x loopback tcp: %s\n", kGrpcGoal,
              grpc_met ? "met" : "missed");
  std::printf("goal: in-process >= %.1f x memcpy: %s\n", kInProcessGoal,
              in_process_met ? "met" : "missed");
  return absl::OkStatus();
}

}  // namespace

int RunStateSize(const std::vector<std::string>& args) { return Report(StateSize(args)); }
int RunBenchTransfer(const std::vector<std::string>& args) { return Report(BenchTransfer(args)); }

}  // namespace ringserve::cli
