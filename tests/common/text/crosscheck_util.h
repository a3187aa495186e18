#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace ringserve::text::testing {

// The folder with the node scripts and the pinned packages they import.
inline std::string NpmDir() { return std::string(RINGSERVE_SOURCE_DIR) + "/tests/common/text/npm"; }

// Runs `node NpmDir()/script args...` and returns its standard output. Fails, saying how to fix
// it, when node or the installed packages are missing: the cross-checks never skip silently.
inline absl::StatusOr<std::string> RunNodeScript(const std::string& script,
                                                 const std::vector<std::string>& args) {
  if (!std::filesystem::exists(NpmDir() + "/node_modules/@huggingface/tokenizers") ||
      !std::filesystem::exists(NpmDir() + "/node_modules/@huggingface/jinja")) {
    return absl::FailedPreconditionError(
        absl::StrCat("the cross-check packages are not installed in ", NpmDir(),
                     "/node_modules; run tests/common/text/npm/install.sh (scripts/setup.sh "
                     "does) and rerun"));
  }
  std::string command = absl::StrCat("node '", NpmDir(), "/", script, "'");
  for (const std::string& arg : args) absl::StrAppend(&command, " '", arg, "'");
  absl::StrAppend(&command, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::InternalError(absl::StrCat("cannot run: ", command));
  std::string output;
  char buffer[65536];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  if (status != 0) {
    return absl::InternalError(absl::StrCat("`", command, "` exited with status ", status,
                                            " (is node installed?):\n", output));
  }
  return output;
}

}  // namespace ringserve::text::testing
