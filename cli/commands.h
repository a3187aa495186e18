#pragma once

#include <string>
#include <vector>

// The ringctl subcommands. Each takes the arguments after its name and returns the exit code
// (0 ok, 1 failure, 2 usage error).
namespace ringserve::cli {

int RunMakeModel(const std::vector<std::string>& args);
int RunLogits(const std::vector<std::string>& args);
int RunGenerate(const std::vector<std::string>& args);
int RunStatus(const std::vector<std::string>& args);
int RunCluster(const std::vector<std::string>& args);
int RunBenchEngine(const std::vector<std::string>& args);
int RunBench(const std::vector<std::string>& args);
int RunBenchAttention(const std::vector<std::string>& args);

}  // namespace ringserve::cli
