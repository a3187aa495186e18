// ringctl and the server binaries as a user runs them: --help everywhere, token ids from files.
#include <stdio.h>
#include <sys/wait.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/subprocess.h"
#include "gtest/gtest.h"
#include "tests/common/model/test_model_dir.h"

namespace ringserve::cli {
namespace {

// Runs `command` through the shell; returns its exit code and stdout.
std::pair<int, std::string> RunShell(const std::string& command) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return {-1, ""};
  std::string out;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string Bin(const std::string& name) { return absl::StrCat(RINGSERVE_BIN_DIR, "/", name); }

TEST(RingctlTest, HelpPrintsTheUsageAndExitsZero) {
  for (const std::string& command :
       {Bin("ringctl") + " --help", Bin("ringctl") + " logits --help",
        Bin("ringctl") + " generate --help", Bin("ringctl") + " generate --offline --help",
        Bin("ringctl") + " cluster --help", Bin("ringctl") + " cluster up --help",
        Bin("ringctl") + " detokenize --help", Bin("ringctl") + " bench-transfer --help",
        Bin("ringserve-decode") + " --help", Bin("ringserve-prefill") + " --help",
        Bin("ringserve-router") + " --help"}) {
    const auto [code, out] = RunShell(command + " 2>/dev/null");
    EXPECT_EQ(code, 0) << command;
    EXPECT_NE(out.find("usage: "), std::string::npos) << command << ":\n" << out;
    EXPECT_EQ(out.find("unknown flag"), std::string::npos) << command << ":\n" << out;
  }
  const auto [code, out] = RunShell(Bin("ringserve-decode") + " --help 2>/dev/null");
  EXPECT_NE(out.find("--stalled-stream-timeout-ms"), std::string::npos) << out;
}

TEST(RingctlTest, TokenIdsComeFromAFileToo) {
  ringserve::testing::TempDir dir;
  ringserve::testing::WriteTinyModel(dir.path());
  const std::string file = dir.path() + "/prompt.txt";
  std::ofstream(file) << "5, 6 7\n8\t9\n";
  const std::string model = " --model " + dir.path() + " --threads 1";

  const auto inline_logits = RunShell(Bin("ringctl") + " logits" + model + " --tokens 5,6,7,8,9");
  const auto file_logits = RunShell(Bin("ringctl") + " logits" + model + " --tokens-file " + file);
  ASSERT_EQ(inline_logits.first, 0);
  ASSERT_EQ(file_logits.first, 0);
  EXPECT_EQ(inline_logits.second, file_logits.second);

  const std::string generate = Bin("ringctl") + " generate --offline" + model +
                               " --max-tokens 4 --temperature 0 --ignore-eos";
  const auto inline_ids = RunShell(generate + " --prompt-tokens 5,6,7,8,9");
  const auto file_ids = RunShell(generate + " --prompt-tokens-file " + file);
  ASSERT_EQ(inline_ids.first, 0);
  ASSERT_EQ(file_ids.first, 0);
  EXPECT_NE(inline_ids.second.find("\"ids\""), std::string::npos);
  EXPECT_EQ(inline_ids.second, file_ids.second);

  EXPECT_NE(
      RunShell(generate + " --prompt-tokens 5 --prompt-tokens-file " + file + " 2>/dev/null").first,
      0);
  std::ofstream(file) << "5 x";
  EXPECT_NE(RunShell(generate + " --prompt-tokens-file " + file + " 2>/dev/null").first, 0);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(RingctlTest, ClusterUpWritesEachProcessLogToItsFile) {
  ringserve::testing::TempDir dir;
  const std::string model = dir.path() + "/model";
  std::filesystem::create_directories(model);
  ringserve::testing::WriteTinyModel(model);
  const std::string logs = dir.path() + "/logs";
  const std::string out = dir.path() + "/out.txt";
  auto cluster = base::Subprocess::Start({Bin("ringctl"), "cluster", "up", "--model", model,
                                          "--port", "0", "--threads", "1", "--log-dir", logs},
                                         /*ready=*/false, out);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  // Another process: its output is polled, at most every 50 ms.
  const absl::Time give_up = absl::Now() + absl::Minutes(2);
  while (ReadFile(out).find("cluster up") == std::string::npos && absl::Now() < give_up &&
         (*cluster)->running()) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE((*cluster)->Signal(SIGTERM).ok());
  auto code = (*cluster)->Wait(absl::Minutes(1));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);

  const std::string shown = ReadFile(out);
  EXPECT_NE(shown.find("logs: " + logs), std::string::npos) << shown;
  EXPECT_NE(shown.find("cluster up; router at"), std::string::npos) << shown;
  EXPECT_EQ(shown.find("event="), std::string::npos) << "process logs on the terminal:\n" << shown;
  for (const char* name : {"router-0.log", "prefill-0.log", "decode-0.log"}) {
    const std::string log = ReadFile(logs + "/" + name);
    EXPECT_NE(log.find("event=listening"), std::string::npos) << name << ":\n" << log;
  }
}

}  // namespace
}  // namespace ringserve::cli
