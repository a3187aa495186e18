#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/base/subprocess.h"

namespace ringserve::cli {

// A router with N prefill and M decode workers as separate processes on loopback (the main job
// of ringctl, and the fixture of the system tests). Owns the processes; stops them on
// destruction. Not thread-safe.
class LocalCluster {
 public:
  struct Options {
    std::string bin_dir;  // where ringserve-router/-prefill/-decode live
    std::string model_dir;
    int prefill = 1;
    int decode = 1;
    int router_port = 0;  // 0 picks a free port (the first router's)
    int routers = 1;      // replicas, each polling every worker; the others' ports are picked
    std::vector<std::string> worker_args;  // appended to every worker's command line
    std::vector<std::string> prefill_args;
    std::vector<std::string> decode_args;
    std::vector<std::string> router_args;
    // When set, each process's stdout and stderr go to <log_dir>/<role>-<index>.log (appended).
    std::string log_dir;
  };
  struct Member {
    std::string role;  // router, prefill, decode
    int index = 0;
    std::unique_ptr<base::Subprocess> process;
    std::string address;
    std::string metrics_url;  // empty when the process serves no metrics
    std::string log_path;     // empty when the process writes to this one's output
  };

  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(const Options& options);
  ~LocalCluster();

  const std::string& router_address() const { return router_addresses_.front(); }
  const std::vector<std::string>& router_addresses() const { return router_addresses_; }
  std::vector<Member>& members() { return members_; }
  Member* Find(const std::string& role, int index);
  // Starts worker `index` of `role` again (after it was killed), on a new port; returns the new
  // address. The router learns it only if started with that address, so tests restart workers
  // on their old port: `port` 0 picks a new one.
  absl::StatusOr<std::string> Restart(const std::string& role, int index, int port);
  // SIGTERM to everyone (router first), then waits; SIGKILL after `grace`.
  void Stop(absl::Duration grace);

 private:
  absl::StatusOr<std::string> StartProcess(Member* member, std::vector<std::string> argv);

  Options options_;
  std::vector<Member> members_;
  std::vector<std::string> router_addresses_;
};

// The directory holding the running executable (where the sibling binaries are).
std::string SelfDirectory();

}  // namespace ringserve::cli
