#include "cli/cluster.h"

#include <signal.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/base/status_macros.h"

namespace ringserve::cli {

std::string SelfDirectory() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

absl::StatusOr<std::string> LocalCluster::StartProcess(Member* member,
                                                       std::vector<std::string> argv) {
  if (!options_.log_dir.empty()) {
    member->log_path =
        absl::StrCat(options_.log_dir, "/", member->role, "-", member->index, ".log");
  }
  ASSIGN_OR_RETURN(member->process,
                   base::Subprocess::Start(std::move(argv), /*ready=*/true, member->log_path));
  ASSIGN_OR_RETURN(const std::string line, member->process->WaitReady(absl::Minutes(5)));
  const std::vector<std::string> ports = absl::StrSplit(line, ' ');
  member->address = absl::StrCat("127.0.0.1:", ports[0]);
  member->metrics_url.clear();
  if (ports.size() > 1 && ports[1] != "-1") {
    member->metrics_url = absl::StrCat("http://127.0.0.1:", ports[1], "/metrics");
  }
  return member->address;
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(const Options& options) {
  std::unique_ptr<LocalCluster> c(new LocalCluster());
  c->options_ = options;
  std::vector<std::string> prefill_addresses, decode_addresses;
  for (const auto& [role, count] :
       {std::pair<std::string, int>{"prefill", options.prefill}, {"decode", options.decode}}) {
    for (int i = 0; i < count; ++i) {
      c->members_.push_back({role, i, nullptr, ""});
      ASSIGN_OR_RETURN(const std::string address, c->Restart(role, i, 0));
      (role == "prefill" ? prefill_addresses : decode_addresses).push_back(address);
    }
  }
  for (int i = 0; i < options.routers; ++i) {
    std::vector<std::string> argv = {options.bin_dir + "/ringserve-router",
                                     "--host=127.0.0.1",
                                     absl::StrCat("--port=", i == 0 ? options.router_port : 0),
                                     "--model=" + options.model_dir,
                                     "--prefill=" + absl::StrJoin(prefill_addresses, ","),
                                     "--decode=" + absl::StrJoin(decode_addresses, ",")};
    argv.insert(argv.end(), options.router_args.begin(), options.router_args.end());
    c->members_.push_back({"router", i, nullptr, ""});
    ASSIGN_OR_RETURN(std::string address, c->StartProcess(&c->members_.back(), argv));
    c->router_addresses_.push_back(std::move(address));
  }
  return c;
}

LocalCluster::Member* LocalCluster::Find(const std::string& role, int index) {
  for (Member& m : members_) {
    if (m.role == role && m.index == index) return &m;
  }
  return nullptr;
}

absl::StatusOr<std::string> LocalCluster::Restart(const std::string& role, int index, int port) {
  Member* m = Find(role, index);
  if (m == nullptr || role == "router") {
    return absl::InvalidArgumentError(absl::StrCat("no ", role, " worker ", index));
  }
  if (m->process != nullptr && m->process->running()) {
    return absl::FailedPreconditionError(absl::StrCat(role, " worker ", index, " is running"));
  }
  std::vector<std::string> argv = {options_.bin_dir + "/ringserve-" + role, "--host=127.0.0.1",
                                   absl::StrCat("--port=", port), "--model=" + options_.model_dir};
  argv.insert(argv.end(), options_.worker_args.begin(), options_.worker_args.end());
  const auto& extra = role == "prefill" ? options_.prefill_args : options_.decode_args;
  argv.insert(argv.end(), extra.begin(), extra.end());
  return StartProcess(m, argv);
}

void LocalCluster::Stop(absl::Duration grace) {
  for (auto it = members_.rbegin(); it != members_.rend(); ++it) {
    if (it->process != nullptr) it->process->Signal(SIGTERM).IgnoreError();
  }
  for (Member& m : members_) {
    if (m.process == nullptr) continue;
    if (!m.process->Wait(grace).ok()) {
      m.process->Signal(SIGKILL).IgnoreError();
      m.process->Wait(absl::Seconds(10)).IgnoreError();
    }
  }
}

LocalCluster::~LocalCluster() { Stop(absl::Seconds(20)); }

}  // namespace ringserve::cli
