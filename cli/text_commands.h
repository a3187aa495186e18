#pragma once

#include <string>
#include <vector>

// The ringctl text subcommands. Each takes the arguments after its name and returns the exit
// code: 0 ok, 1 failure, 2 bad usage or input. Errors go to stderr.
namespace ringserve::cli {

// ringctl tokenize --model DIR (--text T | --file F) [--add-special-tokens]
// Prints the token ids as a JSON list.
int RunTokenize(const std::vector<std::string>& args);

// ringctl detokenize --model DIR --ids 1,2,3 [--skip-special-tokens]
// Prints the decoded text exactly (no newline added).
int RunDetokenize(const std::vector<std::string>& args);

// ringctl chat-template --model DIR --messages-file F [--add-generation-prompt]
// F holds a JSON list of messages ({role, content, reasoning_content, tool_calls, ...}) or an
// object {messages, tools, add_generation_prompt, <other template variables>}. Prints the
// rendered prompt exactly (no newline added).
int RunChatTemplate(const std::vector<std::string>& args);

}  // namespace ringserve::cli
