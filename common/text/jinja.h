#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/text/jinja_value.h"

namespace ringserve::text::jinja {

// Settings of a template. The defaults are those HuggingFace uses for chat templates.
struct TemplateOptions {
  bool trim_blocks = true;    // drop the first newline after a block tag
  bool lstrip_blocks = true;  // drop spaces and tabs before a block tag that starts a line
  size_t max_output_bytes = size_t{64} << 20;
  int64_t max_steps = 50'000'000;  // evaluation steps per render; bounds every loop
  int max_nesting = 128;           // nesting of blocks and expressions when parsing
  int max_macro_depth = 64;        // nested macro calls when rendering
};

// A compiled Jinja template: the subset of Jinja2 that chat templates use. Statements: if /
// elif / else, for (tuple targets, `if` filter, else, loop.*, break, continue), set (names,
// tuples, namespace attributes, blocks), macro, raw, generation, comments and whitespace control.
// Expressions: literals, lists, dicts, attribute and subscript access, slices, calls, filters,
// tests, arithmetic, ~, comparisons, in / not in, and / or / not and conditional expressions,
// with Python semantics. Functions: range, namespace, dict, raise_exception; string and dict
// methods (startswith, split, strip, items, get, ...). Unknown filters, tests and tags are
// errors when compiling.
//
// Immutable after Create; Render may be called from many threads at once.
class Template {
 public:
  // Parses `source`. Syntax errors are InvalidArgument, naming the line.
  static absl::StatusOr<std::unique_ptr<Template>> Create(std::string_view source,
                                                          TemplateOptions options = {});
  ~Template();
  Template(const Template&) = delete;
  Template& operator=(const Template&) = delete;

  // Renders with the variables in `context`. Errors (type errors, undefined values,
  // raise_exception) are InvalidArgument naming the line; exceeding a limit of the options, or
  // output past `max_output_bytes` (the smaller of it and the options' limit applies), is
  // ResourceExhausted.
  absl::StatusOr<std::string> Render(const ValueDict& context,
                                     size_t max_output_bytes = SIZE_MAX) const;

 private:
  struct Program;

  Template(std::unique_ptr<Program> program, TemplateOptions options);

  std::unique_ptr<Program> program_;
  TemplateOptions options_;
};

}  // namespace ringserve::text::jinja
