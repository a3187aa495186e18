#pragma once

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/model/model.h"
#include "common/state/format.h"
#include "common/state/reservations.h"
#include "common/worker/model_state.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/sampling.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::state::testing {

// The tiny checkpoint, loaded on a 2-thread CPU backend, and its fingerprint.
struct TinyModel {
  ringserve::testing::TempDir dir;
  std::unique_ptr<kernels::CpuBackend> backend;
  std::unique_ptr<model::HybridModel> model;
  std::string fingerprint;
  StateLayout layout;

  const model::ModelConfig& config() const { return model->config(); }
};

inline std::unique_ptr<TinyModel> LoadTinyModel(uint64_t seed = 7) {
  auto m = std::make_unique<TinyModel>();
  ringserve::testing::WriteTinyModel(m->dir.path(), seed);
  m->backend = std::make_unique<kernels::CpuBackend>(2);
  auto loaded = model::HybridModel::Load(m->dir.path(), m->backend.get(), {});
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  m->model = std::move(*loaded);
  m->layout = worker::LayoutOf(m->model->config());
  auto fingerprint = worker::ModelFingerprintOfDirectory(m->dir.path());
  EXPECT_TRUE(fingerprint.ok()) << fingerprint.status();
  m->fingerprint = *fingerprint;
  return m;
}

// Calls fn(span) over the linear states and the K and V of tokens [0, tokens) of `state`.
template <typename Fn>
void ForEachStateSpan(const StateBuffer& state, int64_t tokens, Fn fn) {
  for (int64_t i = 0; i < state.num_linear(); ++i) fn(state.LinearState(i));
  for (int64_t i = 0; i < state.num_softmax(); ++i) {
    for (bool value : {false, true}) {
      for (const Span& span : state.KvSpans(i, value, 0, tokens)) fn(span);
    }
  }
}

// A new (zero) state of the tiny model for `capacity` tokens.
inline std::unique_ptr<worker::ModelState> NewState(const TinyModel& m, int64_t capacity) {
  auto state = m.model->NewState(capacity);
  EXPECT_TRUE(state.ok()) << state.status();
  return std::make_unique<worker::ModelState>(std::move(*state));
}

// A state of `capacity` tokens whose linear states and first `tokens` tokens of K and V hold
// deterministic random bytes; its position is `tokens`.
inline std::unique_ptr<worker::ModelState> RandomState(const TinyModel& m, int64_t capacity,
                                                       int64_t tokens, uint64_t seed) {
  auto state = NewState(m, capacity);
  uint64_t counter = seed * 0x9e3779b97f4a7c15ull;
  ForEachStateSpan(*state, tokens, [&](const Span& span) {
    auto* p = static_cast<uint8_t*>(span.data);
    for (size_t i = 0; i < span.bytes; i += 8) {
      const uint64_t bits = kernels::SplitMix64(counter++);
      std::memcpy(p + i, &bits, std::min<size_t>(8, span.bytes - i));
    }
  });
  state->set_position(tokens);
  return state;
}

// A copy of the first `tokens` tokens of `src` in a state of `capacity` tokens.
inline std::unique_ptr<worker::ModelState> CopyState(const TinyModel& m, const StateBuffer& src,
                                                     int64_t capacity, int64_t tokens) {
  auto state = NewState(m, capacity);
  std::vector<Span> from;
  ForEachStateSpan(src, tokens, [&](const Span& span) { from.push_back(span); });
  size_t i = 0;
  ForEachStateSpan(*state, tokens,
                   [&](const Span& span) { std::memcpy(span.data, from[i++].data, span.bytes); });
  state->set_position(tokens);
  return state;
}

// "" when the linear states and the first `tokens` tokens of K and V of `a` and `b` are
// bit-identical (and their positions agree); else where they first differ.
inline std::string CompareStates(const StateBuffer& a, const StateBuffer& b, int64_t tokens) {
  if (a.position() != b.position()) {
    return absl::StrCat("positions ", a.position(), " and ", b.position());
  }
  std::vector<Span> spans_a;
  ForEachStateSpan(a, tokens, [&](const Span& span) { spans_a.push_back(span); });
  std::string diff;
  size_t i = 0;
  ForEachStateSpan(b, tokens, [&](const Span& span) {
    const Span& other = spans_a[i];
    if (diff.empty() &&
        (other.bytes != span.bytes || std::memcmp(other.data, span.data, span.bytes) != 0)) {
      diff = absl::StrCat("span ", i, " of ", span.bytes, " bytes differs");
    }
    ++i;
  });
  return diff;
}

// Records what a ReservationTable's listener hears, and waits for it.
class ListenerLog {
 public:
  ReservationTable::StateListener Listener() {
    return [this](const std::string& request_id, const absl::Status& status) {
      absl::MutexLock lock(&mu_);
      events_[request_id].push_back(status);
    };
  }

  // The statuses heard for `request_id`, once there are at least `count` (at most `timeout`).
  std::vector<absl::Status> WaitFor(const std::string& request_id, size_t count = 1,
                                    absl::Duration timeout = absl::Seconds(20)) {
    absl::MutexLock lock(&mu_);
    auto heard = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      auto it = events_.find(request_id);
      return it != events_.end() && it->second.size() >= count;
    };
    mu_.AwaitWithTimeout(absl::Condition(&heard), timeout);
    return events_[request_id];
  }

 private:
  absl::Mutex mu_;
  std::map<std::string, std::vector<absl::Status>> events_ ABSL_GUARDED_BY(mu_);
};

// StateMemory that is not in place, as a device's: copies (memcpy) to and from host buffers,
// counted, failing from the `fail_at`-th copy on. Thread-safe.
class CopyingMemory : public StateMemory {
 public:
  explicit CopyingMemory(int64_t fail_at = -1) : fail_at_(fail_at) {}

  bool in_place() const override { return false; }
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) const override {
    return Copy(dst, src, bytes);
  }
  absl::Status CopyFromHost(void* dst, const void* src, size_t bytes) const override {
    return Copy(dst, src, bytes);
  }
  int64_t copies() const { return copies_.load(); }

 private:
  absl::Status Copy(void* dst, const void* src, size_t bytes) const {
    if (fail_at_ > 0 && copies_.fetch_add(1) + 1 >= fail_at_) {
      return absl::InternalError("the device copy failed");
    }
    if (fail_at_ <= 0) copies_.fetch_add(1);
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }

  const int64_t fail_at_;
  mutable std::atomic<int64_t> copies_{0};
};

// A ReservationTable of the tiny model whose states come from `m`.
inline std::unique_ptr<ReservationTable> MakeTable(const TinyModel& m, base::Clock* clock,
                                                   ReservationTable::StateListener listener = {},
                                                   uint64_t epoch = 1,
                                                   ReservationLimits limits = {16, 1 << 20},
                                                   const StateMemory* memory = nullptr) {
  ReservationTable::Options options;
  options.layout = m.layout;
  options.model_fingerprint = m.fingerprint;
  options.limits = limits;
  options.factory = [&m](int64_t capacity) {
    return worker::ModelState::Wrap(m.model->NewState(capacity));
  };
  options.clock = clock;
  options.epoch = epoch;
  options.listener = std::move(listener);
  if (memory != nullptr) options.memory = memory;
  auto table = ReservationTable::Create(std::move(options));
  EXPECT_TRUE(table.ok()) << table.status();
  return std::move(*table);
}

// Nothing held: no reservation, slot, KV token, state memory or transfer.
inline void ExpectEmpty(const ReservationTable& table) {
  const ReservationStats s = table.Stats();
  EXPECT_EQ(s.reservations, 0);
  EXPECT_EQ(s.running, 0);
  EXPECT_EQ(s.slots_used, 0);
  EXPECT_EQ(s.kv_tokens_used, 0);
  EXPECT_EQ(s.state_bytes, 0u);
  EXPECT_EQ(s.transfers_in_flight, 0);
}

// A gRPC server on a free loopback port.
struct TestServer {
  std::unique_ptr<grpc::Server> server;
  int port = 0;

  std::string address() const { return absl::StrCat("127.0.0.1:", port); }
};

inline TestServer StartServer(grpc::Service* service) {
  TestServer s;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &s.port);
  builder.RegisterService(service);
  s.server = builder.BuildAndStart();
  EXPECT_NE(s.server, nullptr);
  EXPECT_GT(s.port, 0);
  return s;
}

}  // namespace ringserve::state::testing
