#pragma once

// The template engine's syntax tree, shared by its parser (jinja_parse.cc) and its evaluator
// (jinja.cc). Internal to common/text's Jinja engine; users include common/text/jinja.h.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/text/jinja.h"
#include "common/text/jinja_value.h"

namespace ringserve::text::jinja {

// InvalidArgument "template syntax error at line L: ..." (parsing) and "template error at line
// L: ..." (rendering).
absl::Status SyntaxError(int line, std::string_view message);
absl::Status RuntimeError(int line, std::string_view message);

struct Expr {
  enum class Kind {
    kLiteral,
    kName,
    kList,
    kDict,
    kGetAttr,
    kGetItem,
    kSlice,
    kCall,
    kFilter,
    kTest,
    kNeg,
    kPos,
    kBinary,
    kCompare,
    kAnd,
    kOr,
    kNot,
    kCondition
  };
  Kind kind;
  int line;
  Value literal;     // kLiteral
  std::string name;  // kName; attribute; filter, test or operator name
  // Operands. kDict: key, value, key, value... kSlice: object, start, stop, step (null when
  // absent). kCall: callee, positional arguments. kFilter / kTest: subject, arguments.
  // kCompare: first operand, then one per operator in `ops`. kCondition: then, condition, else.
  std::vector<std::unique_ptr<Expr>> args;
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  std::vector<std::string> ops;  // kCompare
  bool negated = false;          // kTest: `is not`
};

struct Stmt;
using Body = std::vector<Stmt>;

struct Stmt {
  enum class Kind {
    kText,
    kOutput,
    kIf,
    kFor,
    kSet,
    kSetAttribute,
    kSetBlock,
    kBreak,
    kContinue,
    kMacro,
    kBlock
  };
  Kind kind;
  int line;
  std::string text;                  // kText; kSetAttribute: the attribute
  std::unique_ptr<Expr> expr;        // kOutput, kSet value, kFor iterable
  std::unique_ptr<Expr> condition;   // kFor: the `if` filter
  std::vector<std::string> targets;  // kFor, kSet, kSetAttribute, kSetBlock names
  std::vector<std::pair<std::unique_ptr<Expr>, Body>> branches;  // kIf
  Body body;
  Body else_body;
  std::unique_ptr<Macro> macro;  // kMacro
};

struct Macro {
  std::string name;
  std::vector<std::string> params;
  std::vector<std::unique_ptr<Expr>> defaults;  // per param; null when none
  Body body;
};

struct Template::Program {
  Body body;
};

// The filters and tests the engine implements (the parser refuses others; `select`-style
// filters check their argument names at render time).
const absl::flat_hash_set<std::string>& KnownFilters();
const absl::flat_hash_set<std::string>& KnownTests();

// Parses `source` (valid UTF-8) into the template's body: lexing with the options' whitespace
// control, then parsing with Jinja2's precedence and the options' depth limits.
absl::StatusOr<Body> ParseTemplate(std::string_view source, const TemplateOptions& options);

}  // namespace ringserve::text::jinja
