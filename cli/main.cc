// ringctl: the user's tool for ringserve (model files, offline runs, the local cluster, clients,
// benchmarks).
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/state_commands.h"
#include "cli/text_commands.h"

namespace {

struct Command {
  std::function<int(const std::vector<std::string>&)> run;
  const char* help;
};

const std::map<std::string, Command>& Commands() {
  using namespace ringserve::cli;
  static const auto* commands = new std::map<std::string, Command>{
      {"make-model",
       {RunMakeModel, "write a default checkpoint (--preset tiny|small[-softmax] --out DIR)"}},
      {"logits",
       {RunLogits,
        "print the logits of every position (--model DIR --tokens 1,2,3 | --tokens-file F)"}},
      {"generate", {RunGenerate, "generate offline (--offline) or through a router (--router)"}},
      {"tokenize", {RunTokenize, "print the ids of a text (--model DIR --text T | --file F)"}},
      {"detokenize", {RunDetokenize, "print the text of ids (--model DIR --ids 1,2,3)"}},
      {"chat-template",
       {RunChatTemplate, "render the chat template (--model DIR --messages-file F)"}},
      {"state-size",
       {RunStateSize, "state size of a config at N tokens vs all-softmax (--model --tokens)"}},
      {"bench-transfer",
       {RunBenchTransfer, "state transfer throughput vs loopback TCP and memcpy"}},
      {"status", {RunStatus, "print the router's worker pools (--router ADDR [--watch])"}},
      {"bench", {RunBench, "serving benchmark against a router (TTFT, ITL, throughput)"}},
      {"bench-engine", {RunBenchEngine, "engine prefill/decode speed vs machine limits"}},
      {"bench-attention",
       {RunBenchAttention, "chunked vs recurrent linear attention vs softmax over lengths"}},
      {"cluster", {RunCluster, "cluster up: router + N prefill + M decode on loopback"}},
  };
  return *commands;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string first = argc < 2 ? "" : argv[1];
  const bool help = first == "--help" || first == "-h" || first == "help";
  if (help || Commands().count(first) == 0) {
    FILE* out = help ? stdout : stderr;
    std::fprintf(out,
                 "usage: ringctl COMMAND [flags]  (ringctl COMMAND --help for its flags)\n"
                 "commands:\n");
    for (const auto& [name, cmd] : Commands()) {
      std::fprintf(out, "  %-16s %s\n", name.c_str(), cmd.help);
    }
    return help ? 0 : 2;
  }
  return Commands().at(argv[1]).run(std::vector<std::string>(argv + 2, argv + argc));
}
