#include "common/base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ringserve::base {

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(std::vector<std::string> argv,
                                                              bool ready,
                                                              const std::string& output_path) {
  int output = -1;
  if (!output_path.empty()) {
    output = ::open(output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (output < 0) {
      return absl::InternalError(absl::StrCat("open ", output_path, ": ", std::strerror(errno)));
    }
  }
  int fds[2] = {-1, -1};
  if (ready) {
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      if (output >= 0) ::close(output);
      return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
    }
    argv.push_back(absl::StrCat("--ready-fd=", fds[1]));
  }
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (ready) ::fcntl(fds[1], F_SETFD, 0);  // the write end survives exec
    if (output >= 0) {
      ::dup2(output, STDOUT_FILENO);  // the copies survive exec
      ::dup2(output, STDERR_FILENO);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
  if (output >= 0) ::close(output);
  if (pid < 0) {
    if (ready) {
      ::close(fds[0]);
      ::close(fds[1]);
    }
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  std::unique_ptr<Subprocess> p(new Subprocess());
  p->pid_ = pid;
  if (ready) {
    ::close(fds[1]);
    p->ready_fd_ = fds[0];
  }
  return p;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
  }
  if (ready_fd_ >= 0) ::close(ready_fd_);
}

absl::StatusOr<std::string> Subprocess::WaitReady(absl::Duration timeout) {
  if (ready_fd_ < 0) return absl::FailedPreconditionError("process started without a ready pipe");
  std::string line;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    pollfd pfd{ready_fd_, POLLIN, 0};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (ms <= 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("process ", pid_, " not ready after ", absl::FormatDuration(timeout)));
    }
    const int n = ::poll(&pfd, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    char buf[64];
    const ssize_t got = ::read(ready_fd_, buf, sizeof(buf));
    if (got > 0) {
      line.append(buf, got);
      if (line.find('\n') != std::string::npos) break;
      continue;
    }
    if (got == 0) break;
    if (errno != EINTR) break;
  }
  ::close(ready_fd_);
  ready_fd_ = -1;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.empty()) {
    return absl::UnavailableError(absl::StrCat("process ", pid_, " exited before it was ready"));
  }
  return line;
}

absl::Status Subprocess::Signal(int sig) {
  if (reaped_) return absl::OkStatus();
  if (::kill(pid_, sig) != 0) {
    return absl::InternalError(absl::StrCat("kill ", pid_, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

bool Subprocess::running() {
  if (reaped_) return false;
  int status;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!reaped_) {
    int status;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("process ", pid_, " still running"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return exit_code_;
}

void NotifyReady(int fd, const std::string& line) {
  if (fd < 0) return;
  const std::string text = line + "\n";
  [[maybe_unused]] ssize_t n = ::write(fd, text.data(), text.size());
  ::close(fd);
}

ProcessUsage UsageOf(pid_t pid) {
  ProcessUsage u;
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    for (auto [name, out] : {std::pair{"VmRSS:", &u.rss_kib}, std::pair{"VmHWM:", &u.hwm_kib},
                             std::pair{"Threads:", &u.threads}}) {
      if (line.rfind(name, 0) != 0) continue;
      std::string v = line.substr(std::string(name).size());
      std::erase_if(v, [](char c) { return c < '0' || c > '9'; });
      int64_t n;
      if (absl::SimpleAtoi(v, &n)) *out = n;
    }
  }
  return u;
}

}  // namespace ringserve::base
