#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ringserve::base {

// A child process started with fork/exec. The server binaries report their bound port through
// an inherited pipe (--ready-fd), so a parent learns it by a blocking read, never by polling.
// The destructor kills (SIGKILL) and reaps a child still running. Not thread-safe.
class Subprocess {
 public:
  // Starts `argv` (argv[0] is a path). When `ready` is true a pipe is created and
  // "--ready-fd=N" appended to the arguments. With `output_path` the child's stdout and stderr
  // are appended to that file (created when missing); else they are this process's.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(std::vector<std::string> argv,
                                                           bool ready,
                                                           const std::string& output_path = "");
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  // Reads the line the child writes to its ready fd (its port), waiting up to `timeout`.
  absl::StatusOr<std::string> WaitReady(absl::Duration timeout);
  absl::Status Signal(int sig);
  // Waits for exit up to `timeout`; returns the exit status (128+signal when killed).
  absl::StatusOr<int> Wait(absl::Duration timeout);
  bool running();

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  int ready_fd_ = -1;
  bool reaped_ = false;
  int exit_code_ = 0;
};

// Writes `line` to fd `fd` and closes it (the server side of --ready-fd). fd < 0 does nothing.
void NotifyReady(int fd, const std::string& line);

// What /proc/PID/status says of a process's memory and threads; -1 where unreadable.
struct ProcessUsage {
  int64_t rss_kib = -1;  // VmRSS
  int64_t hwm_kib = -1;  // VmHWM (peak RSS)
  int64_t threads = -1;
};
ProcessUsage UsageOf(pid_t pid);

}  // namespace ringserve::base
