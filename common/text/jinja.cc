#include "common/text/jinja.h"

#include <unicode/unistr.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/text/jinja_syntax.h"
#include "common/text/utf8.h"

namespace ringserve::text::jinja {

absl::Status RuntimeError(int line, std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("template error at line ", line, ": ", std::string(message)));
}

namespace {

// ---------------------------------------------------------------------------------------------
// Python-like helpers on values

// The code points of `s` as separate UTF-8 strings.
std::vector<std::string> SplitCodePoints(const std::string& s) {
  std::vector<std::string> chars;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t start = pos;
    NextCodePoint(s, &pos);
    chars.push_back(s.substr(start, pos - start));
  }
  return chars;
}

// Python's str.isspace() for one code point.
bool IsPythonSpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Python's str.strip / lstrip / rstrip; `chars` null means whitespace.
std::string Strip(const std::string& s, const std::string* chars, bool left, bool right) {
  std::vector<char32_t> set;
  if (chars != nullptr) {
    size_t pos = 0;
    while (pos < chars->size()) set.push_back(NextCodePoint(*chars, &pos));
  }
  auto strippable = [&](char32_t c) {
    return chars == nullptr ? IsPythonSpace(c) : std::find(set.begin(), set.end(), c) != set.end();
  };
  size_t begin = 0;
  size_t end = s.size();
  if (left) {
    while (begin < end) {
      size_t next = begin;
      if (!strippable(NextCodePoint(s, &next))) break;
      begin = next;
    }
  }
  if (right) {
    while (end > begin) {
      size_t start = end - 1;
      while (start > begin && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80) --start;
      size_t next = start;
      if (!strippable(NextCodePoint(s, &next))) break;
      end = start;
    }
  }
  return s.substr(begin, end - begin);
}

// Python's str.split(sep, maxsplit).
std::vector<std::string> Split(const std::string& s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> parts;
  if (sep != nullptr) {
    size_t start = 0;
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      const size_t at = s.find(*sep, start);
      if (at == std::string::npos) break;
      parts.push_back(s.substr(start, at - start));
      start = at + sep->size();
    }
    parts.push_back(s.substr(start));
    return parts;
  }
  size_t pos = 0;
  auto space_at = [&](size_t p, size_t* next) {
    *next = p;
    return IsPythonSpace(NextCodePoint(s, next));
  };
  size_t next;
  while (pos < s.size()) {
    while (pos < s.size() && space_at(pos, &next)) pos = next;
    if (pos >= s.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
      parts.push_back(Strip(s.substr(pos), nullptr, false, true));
      break;
    }
    const size_t start = pos;
    while (pos < s.size() && !space_at(pos, &next)) pos = next;
    parts.push_back(s.substr(start, pos - start));
  }
  return parts;
}

std::string ChangeCase(const std::string& s, char mode) {
  icu::UnicodeString text = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), s.size()));
  switch (mode) {
    case 'u':
      text.toUpper();
      break;
    case 'l':
      text.toLower();
      break;
    case 't':
      text.toTitle(nullptr);
      break;
    case 'c':
      if (text.length() > 0) {
        icu::UnicodeString rest = text.tempSubString(text.moveIndex32(0, 1));
        text = text.tempSubString(0, text.moveIndex32(0, 1));
        text.toUpper();
        rest.toLower();
        text += rest;
      }
      break;
  }
  std::string out;
  text.toUTF8String(out);
  return out;
}

std::string Replace(const std::string& s, const std::string& old, const std::string& with,
                    int64_t count) {
  std::string out;
  if (old.empty()) {
    // Python inserts `with` between every code point (and at both ends).
    std::vector<std::string> chars = SplitCodePoints(s);
    int64_t done = 0;
    for (const std::string& c : chars) {
      if (count < 0 || done < count) {
        out += with;
        ++done;
      }
      out += c;
    }
    if (count < 0 || done < count) out += with;
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(old, start);
    if (at == std::string::npos) break;
    out.append(s, start, at - start);
    out += with;
    start = at + old.size();
    ++done;
  }
  out.append(s, start, std::string::npos);
  return out;
}

// Python's slice index normalization for a sequence of length n.
void SliceBounds(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step,
                 int64_t* begin, int64_t* end) {
  auto clamp = [&](std::optional<int64_t> index, int64_t fallback) {
    if (!index.has_value()) return fallback;
    int64_t i = *index;
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  *begin = clamp(start, step > 0 ? 0 : n - 1);
  *end = clamp(stop, step > 0 ? n : -1);
}

// ---------------------------------------------------------------------------------------------
// Evaluator

// Renders one template call. Not thread-safe; one per Render.
class Renderer {
 public:
  Renderer(const TemplateOptions& options, std::string* out) : options_(options), out_(out) {}

  absl::Status Run(const Body& body, const ValueDict& context) {
    frames_.emplace_back();
    for (const auto& [key, value] : context.items()) frames_.back()[key] = value;
    frames_.emplace_back();
    return Exec(body).status();
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Frame = absl::flat_hash_map<std::string, Value>;
  using Args = std::vector<Value>;
  using Kwargs = std::vector<std::pair<std::string, Value>>;

  absl::Status Step(int line) {
    if (++steps_ > options_.max_steps) {
      return absl::ResourceExhaustedError(absl::StrCat("template error at line ", line,
                                                       ": evaluation exceeds the limit of ",
                                                       options_.max_steps, " steps"));
    }
    return absl::OkStatus();
  }

  absl::Status Emit(std::string_view text, int line) {
    if (out_->size() + text.size() > options_.max_output_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("template error at line ", line,
                                                       ": output exceeds the limit of ",
                                                       options_.max_output_bytes, " bytes"));
    }
    out_->append(text);
    return absl::OkStatus();
  }

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value::Undefined(name);
  }

  void Assign(const std::string& name, Value value) { frames_.back()[name] = std::move(value); }

  absl::Status Unpack(const std::vector<std::string>& targets, const Value& value, int line) {
    if (targets.size() == 1) {
      Assign(targets[0], value);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value, line));
    if (items.size() != targets.size()) {
      return RuntimeError(line, absl::StrCat("cannot unpack ", items.size(), " values into ",
                                             targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) Assign(targets[i], std::move(items[i]));
    return absl::OkStatus();
  }

  // The items a for loop visits: list elements, dict keys, string characters.
  absl::StatusOr<std::vector<Value>> Iterate(const Value& value, int line) const {
    std::vector<Value> items;
    switch (value.kind()) {
      case Value::Kind::kUndefined:
        return items;
      case Value::Kind::kList:
        return value.AsList();
      case Value::Kind::kDict:
      case Value::Kind::kNamespace:
        for (const auto& [key, unused] : value.AsDict().items()) items.emplace_back(key);
        return items;
      case Value::Kind::kString:
        for (std::string& c : SplitCodePoints(value.AsString())) items.emplace_back(std::move(c));
        return items;
      default:
        return RuntimeError(line, absl::StrCat("'", value.TypeName(), "' object is not iterable"));
    }
  }

  absl::StatusOr<Flow> Exec(const Body& body) {
    for (const Stmt& stmt : body) {
      ASSIGN_OR_RETURN(Flow flow, ExecOne(stmt));
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> ExecOne(const Stmt& stmt) {
    RETURN_IF_ERROR(Step(stmt.line));
    switch (stmt.kind) {
      case Stmt::Kind::kText:
        RETURN_IF_ERROR(Emit(stmt.text, stmt.line));
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        ASSIGN_OR_RETURN(Value value, Eval(*stmt.expr));
        RETURN_IF_ERROR(Emit(value.Str(), stmt.line));
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (const auto& [condition, branch] : stmt.branches) {
          ASSIGN_OR_RETURN(Value test, Eval(*condition));
          if (test.Truthy()) return Exec(branch);
        }
        return Exec(stmt.else_body);
      case Stmt::Kind::kFor:
        return ExecFor(stmt);
      case Stmt::Kind::kSet: {
        ASSIGN_OR_RETURN(Value value, Eval(*stmt.expr));
        RETURN_IF_ERROR(Unpack(stmt.targets, value, stmt.line));
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetAttribute: {
        const Value target = Lookup(stmt.targets[0]);
        if (target.kind() != Value::Kind::kNamespace) {
          return RuntimeError(stmt.line,
                              absl::StrCat("cannot assign attribute '", stmt.text, "' on '",
                                           stmt.targets[0], "', which is not a namespace"));
        }
        ASSIGN_OR_RETURN(Value value, Eval(*stmt.expr));
        target.MutableNamespace().Set(stmt.text, std::move(value));
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        ASSIGN_OR_RETURN(std::string text, Capture(stmt.body, stmt.line));
        Assign(stmt.targets[0], Value(std::move(text)));
        return Flow::kNormal;
      }
      case Stmt::Kind::kBreak:
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        return Flow::kContinue;
      case Stmt::Kind::kMacro:
        Assign(stmt.macro->name, Value::FromMacro(stmt.macro.get()));
        return Flow::kNormal;
      case Stmt::Kind::kBlock:
        return Exec(stmt.body);
    }
    return Flow::kNormal;
  }

  // Runs `body` with output going to a string instead.
  absl::StatusOr<std::string> Capture(const Body& body, int line) {
    std::string captured;
    std::string* saved = out_;
    out_ = &captured;
    absl::StatusOr<Flow> flow = Exec(body);
    out_ = saved;
    RETURN_IF_ERROR(flow.status());
    if (out_->size() + captured.size() > options_.max_output_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("template error at line ", line,
                                                       ": output exceeds the limit of ",
                                                       options_.max_output_bytes, " bytes"));
    }
    return captured;
  }

  absl::StatusOr<Flow> ExecFor(const Stmt& stmt) {
    ASSIGN_OR_RETURN(Value iterable, Eval(*stmt.expr));
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable, stmt.line));
    if (stmt.condition != nullptr) {
      std::vector<Value> kept;
      for (Value& item : items) {
        frames_.emplace_back();
        absl::Status unpacked = Unpack(stmt.targets, item, stmt.line);
        absl::StatusOr<Value> keep =
            unpacked.ok() ? Eval(*stmt.condition) : absl::StatusOr<Value>(unpacked);
        frames_.pop_back();
        RETURN_IF_ERROR(keep.status());
        if (keep->Truthy()) kept.push_back(std::move(item));
      }
      items = std::move(kept);
    }
    if (items.empty()) return Exec(stmt.else_body);
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(Step(stmt.line));
      ValueDict loop;
      loop.Set("index0", Value(i));
      loop.Set("index", Value(i + 1));
      loop.Set("revindex0", Value(n - i - 1));
      loop.Set("revindex", Value(n - i));
      loop.Set("first", Value(i == 0));
      loop.Set("last", Value(i == n - 1));
      loop.Set("length", Value(n));
      loop.Set("depth", Value(1));
      loop.Set("depth0", Value(0));
      if (i > 0) loop.Set("previtem", items[i - 1]);
      if (i + 1 < n) loop.Set("nextitem", items[i + 1]);
      frames_.emplace_back();
      frames_.back()["loop"] = Value::FromDict(std::move(loop));
      absl::Status unpacked = Unpack(stmt.targets, items[i], stmt.line);
      absl::StatusOr<Flow> flow = unpacked.ok() ? Exec(stmt.body) : absl::StatusOr<Flow>(unpacked);
      frames_.pop_back();
      RETURN_IF_ERROR(flow.status());
      if (*flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Value> Eval(const Expr& expr) {
    RETURN_IF_ERROR(Step(expr.line));
    switch (expr.kind) {
      case Expr::Kind::kLiteral:
        return expr.literal;
      case Expr::Kind::kName:
        return Lookup(expr.name);
      case Expr::Kind::kList: {
        Value::List list;
        list.reserve(expr.args.size());
        for (const auto& item : expr.args) {
          ASSIGN_OR_RETURN(Value value, Eval(*item));
          list.push_back(std::move(value));
        }
        return Value::FromList(std::move(list));
      }
      case Expr::Kind::kDict: {
        ValueDict dict;
        for (size_t i = 0; i + 1 < expr.args.size(); i += 2) {
          ASSIGN_OR_RETURN(Value key, Eval(*expr.args[i]));
          if (!key.is_string()) {
            return RuntimeError(
                expr.line, absl::StrCat("dict keys must be strings, not '", key.TypeName(), "'"));
          }
          ASSIGN_OR_RETURN(Value value, Eval(*expr.args[i + 1]));
          dict.Set(key.AsString(), std::move(value));
        }
        return Value::FromDict(std::move(dict));
      }
      case Expr::Kind::kGetAttr: {
        ASSIGN_OR_RETURN(Value object, Eval(*expr.args[0]));
        return GetAttribute(object, expr.name, expr.line);
      }
      case Expr::Kind::kGetItem: {
        ASSIGN_OR_RETURN(Value object, Eval(*expr.args[0]));
        ASSIGN_OR_RETURN(Value key, Eval(*expr.args[1]));
        return GetItem(object, key, expr.line);
      }
      case Expr::Kind::kSlice:
        return EvalSlice(expr);
      case Expr::Kind::kCall:
        return EvalCall(expr);
      case Expr::Kind::kFilter: {
        ASSIGN_OR_RETURN(Value subject, Eval(*expr.args[0]));
        ASSIGN_OR_RETURN(Args args, EvalArgs(expr, 1));
        ASSIGN_OR_RETURN(Kwargs kwargs, EvalKwargs(expr));
        return ApplyFilter(expr.name, subject, args, kwargs, expr.line);
      }
      case Expr::Kind::kTest: {
        ASSIGN_OR_RETURN(Value subject, Eval(*expr.args[0]));
        ASSIGN_OR_RETURN(Args args, EvalArgs(expr, 1));
        ASSIGN_OR_RETURN(bool result, ApplyTest(expr.name, subject, args, expr.line));
        return Value(result != expr.negated);
      }
      case Expr::Kind::kNeg:
      case Expr::Kind::kPos: {
        ASSIGN_OR_RETURN(Value operand, Eval(*expr.args[0]));
        if (operand.kind() == Value::Kind::kInt) {
          if (expr.kind == Expr::Kind::kPos) return operand;
          if (operand.AsInt() == INT64_MIN) return RuntimeError(expr.line, "integer overflow");
          return Value(-operand.AsInt());
        }
        if (operand.kind() == Value::Kind::kFloat) {
          return Value(expr.kind == Expr::Kind::kNeg ? -operand.AsFloat() : operand.AsFloat());
        }
        if (operand.kind() == Value::Kind::kBool) {
          const int64_t v = operand.AsBool() ? 1 : 0;
          return Value(expr.kind == Expr::Kind::kNeg ? -v : v);
        }
        return RuntimeError(expr.line, absl::StrCat("bad operand type for unary ",
                                                    expr.kind == Expr::Kind::kNeg ? "-" : "+",
                                                    ": '", operand.TypeName(), "'"));
      }
      case Expr::Kind::kBinary: {
        ASSIGN_OR_RETURN(Value left, Eval(*expr.args[0]));
        ASSIGN_OR_RETURN(Value right, Eval(*expr.args[1]));
        return Arithmetic(expr.name, left, right, expr.line);
      }
      case Expr::Kind::kCompare: {
        ASSIGN_OR_RETURN(Value left, Eval(*expr.args[0]));
        for (size_t i = 0; i < expr.ops.size(); ++i) {
          ASSIGN_OR_RETURN(Value right, Eval(*expr.args[i + 1]));
          ASSIGN_OR_RETURN(bool holds, Compare(expr.ops[i], left, right, expr.line));
          if (!holds) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case Expr::Kind::kAnd: {
        ASSIGN_OR_RETURN(Value left, Eval(*expr.args[0]));
        if (!left.Truthy()) return left;
        return Eval(*expr.args[1]);
      }
      case Expr::Kind::kOr: {
        ASSIGN_OR_RETURN(Value left, Eval(*expr.args[0]));
        if (left.Truthy()) return left;
        return Eval(*expr.args[1]);
      }
      case Expr::Kind::kNot: {
        ASSIGN_OR_RETURN(Value operand, Eval(*expr.args[0]));
        return Value(!operand.Truthy());
      }
      case Expr::Kind::kCondition: {
        ASSIGN_OR_RETURN(Value test, Eval(*expr.args[1]));
        if (test.Truthy()) return Eval(*expr.args[0]);
        if (expr.args[2] == nullptr) return Value::Undefined("");
        return Eval(*expr.args[2]);
      }
    }
    return RuntimeError(expr.line, "unknown expression");
  }

  absl::StatusOr<Args> EvalArgs(const Expr& expr, size_t from) {
    Args args;
    for (size_t i = from; i < expr.args.size(); ++i) {
      ASSIGN_OR_RETURN(Value value, Eval(*expr.args[i]));
      args.push_back(std::move(value));
    }
    return args;
  }

  absl::StatusOr<Kwargs> EvalKwargs(const Expr& expr) {
    Kwargs kwargs;
    for (const auto& [name, value_expr] : expr.kwargs) {
      ASSIGN_OR_RETURN(Value value, Eval(*value_expr));
      kwargs.emplace_back(name, std::move(value));
    }
    return kwargs;
  }

  static absl::Status UndefinedError(const Value& value, int line, std::string_view action) {
    const std::string& name = value.undefined_name();
    return RuntimeError(line, absl::StrCat(std::string(action), " of an undefined value",
                                           name.empty() ? "" : absl::StrCat(" ('", name, "')")));
  }

  absl::StatusOr<Value> GetAttribute(const Value& object, const std::string& name, int line) {
    switch (object.kind()) {
      case Value::Kind::kUndefined:
        return UndefinedError(object, line, absl::StrCat("cannot read attribute '", name, "'"));
      case Value::Kind::kDict:
      case Value::Kind::kNamespace: {
        const Value* found = object.AsDict().Find(name);
        if (found != nullptr) return *found;
        return Value::Undefined(name);
      }
      default:
        return Value::Undefined(name);
    }
  }

  absl::StatusOr<Value> GetItem(const Value& object, const Value& key, int line) {
    switch (object.kind()) {
      case Value::Kind::kUndefined:
        return UndefinedError(object, line, "cannot subscript");
      case Value::Kind::kDict:
      case Value::Kind::kNamespace:
        if (key.is_string()) return GetAttribute(object, key.AsString(), line);
        return Value::Undefined(key.Str());
      case Value::Kind::kList:
      case Value::Kind::kString: {
        if (key.kind() != Value::Kind::kInt) return Value::Undefined(key.Str());
        if (object.kind() == Value::Kind::kList) {
          const Value::List& list = object.AsList();
          int64_t i = key.AsInt();
          if (i < 0) i += static_cast<int64_t>(list.size());
          if (i < 0 || i >= static_cast<int64_t>(list.size())) {
            return Value::Undefined(absl::StrCat("index ", key.AsInt()));
          }
          return list[i];
        }
        std::vector<std::string> chars = SplitCodePoints(object.AsString());
        int64_t i = key.AsInt();
        if (i < 0) i += static_cast<int64_t>(chars.size());
        if (i < 0 || i >= static_cast<int64_t>(chars.size())) {
          return Value::Undefined(absl::StrCat("index ", key.AsInt()));
        }
        return Value(chars[i]);
      }
      default:
        return Value::Undefined(key.Str());
    }
  }

  absl::StatusOr<Value> EvalSlice(const Expr& expr) {
    ASSIGN_OR_RETURN(Value object, Eval(*expr.args[0]));
    std::optional<int64_t> bounds[3];
    for (int i = 0; i < 3; ++i) {
      if (expr.args[i + 1] == nullptr) continue;
      ASSIGN_OR_RETURN(Value bound, Eval(*expr.args[i + 1]));
      if (bound.is_none()) continue;
      if (bound.kind() != Value::Kind::kInt) {
        return RuntimeError(expr.line, "slice indices must be integers or none");
      }
      bounds[i] = bound.AsInt();
    }
    const int64_t step = bounds[2].value_or(1);
    if (step == 0) return RuntimeError(expr.line, "slice step cannot be zero");
    std::vector<Value> source;
    std::vector<std::string> chars;
    int64_t n;
    if (object.kind() == Value::Kind::kList) {
      n = static_cast<int64_t>(object.AsList().size());
    } else if (object.is_string()) {
      chars = SplitCodePoints(object.AsString());
      n = static_cast<int64_t>(chars.size());
    } else if (object.is_undefined()) {
      return UndefinedError(object, expr.line, "cannot slice");
    } else {
      return RuntimeError(expr.line,
                          absl::StrCat("'", object.TypeName(), "' object is not subscriptable"));
    }
    int64_t begin;
    int64_t end;
    SliceBounds(n, bounds[0], bounds[1], step, &begin, &end);
    if (object.is_string()) {
      std::string out;
      for (int64_t i = begin; step > 0 ? i < end : i > end; i += step) out += chars[i];
      return Value(std::move(out));
    }
    Value::List out;
    for (int64_t i = begin; step > 0 ? i < end : i > end; i += step) {
      out.push_back(object.AsList()[i]);
    }
    return Value::FromList(std::move(out));
  }

  absl::StatusOr<Value> EvalCall(const Expr& expr) {
    const Expr& callee = *expr.args[0];
    ASSIGN_OR_RETURN(Args args, EvalArgs(expr, 1));
    ASSIGN_OR_RETURN(Kwargs kwargs, EvalKwargs(expr));
    if (callee.kind == Expr::Kind::kGetAttr) {
      ASSIGN_OR_RETURN(Value object, Eval(*callee.args[0]));
      if (object.kind() == Value::Kind::kDict || object.kind() == Value::Kind::kNamespace) {
        const Value* member = object.AsDict().Find(callee.name);
        if (member != nullptr && member->kind() == Value::Kind::kMacro) {
          return CallMacro(*member->AsMacro(), args, kwargs, expr.line);
        }
      }
      return CallMethod(object, callee.name, args, kwargs, expr.line);
    }
    ASSIGN_OR_RETURN(Value function, Eval(callee));
    if (function.kind() == Value::Kind::kMacro) {
      return CallMacro(*function.AsMacro(), args, kwargs, expr.line);
    }
    if (function.is_undefined() && callee.kind == Expr::Kind::kName) {
      return CallBuiltin(callee.name, args, kwargs, expr.line);
    }
    return RuntimeError(expr.line,
                        absl::StrCat("'", function.TypeName(), "' object is not callable"));
  }

  absl::StatusOr<Value> CallMacro(const Macro& macro, const Args& args, const Kwargs& kwargs,
                                  int line) {
    if (macro_depth_ >= options_.max_macro_depth) {
      return absl::ResourceExhaustedError(absl::StrCat("template error at line ", line,
                                                       ": macro calls nest deeper than the limit ",
                                                       options_.max_macro_depth));
    }
    if (args.size() > macro.params.size()) {
      return RuntimeError(line, absl::StrCat("macro '", macro.name, "' takes ", macro.params.size(),
                                             " arguments, got ", args.size()));
    }
    Frame frame;
    for (size_t i = 0; i < macro.params.size(); ++i) {
      if (i < args.size()) {
        frame[macro.params[i]] = args[i];
      } else if (macro.defaults[i] != nullptr) {
        ASSIGN_OR_RETURN(frame[macro.params[i]], Eval(*macro.defaults[i]));
      } else {
        frame[macro.params[i]] = Value::Undefined(macro.params[i]);
      }
    }
    for (const auto& [name, value] : kwargs) {
      if (std::find(macro.params.begin(), macro.params.end(), name) == macro.params.end()) {
        return RuntimeError(line,
                            absl::StrCat("macro '", macro.name, "' has no parameter '", name, "'"));
      }
      frame[name] = value;
    }
    frames_.push_back(std::move(frame));
    ++macro_depth_;
    absl::StatusOr<std::string> text = Capture(macro.body, line);
    --macro_depth_;
    frames_.pop_back();
    RETURN_IF_ERROR(text.status());
    return Value(std::move(*text));
  }

  // The argument at `position` or named `name`, or nullptr when not given.
  static const Value* Argument(const Args& args, const Kwargs& kwargs, size_t position,
                               std::string_view name) {
    if (position < args.size()) return &args[position];
    for (const auto& [key, value] : kwargs) {
      if (key == name) return &value;
    }
    return nullptr;
  }

  static absl::Status CheckArity(std::string_view what, const Args& args, const Kwargs& kwargs,
                                 std::initializer_list<std::string_view> names, int line) {
    if (args.size() > names.size()) {
      return RuntimeError(line, absl::StrCat(std::string(what), " takes at most ", names.size(),
                                             " arguments, got ", args.size()));
    }
    for (const auto& [key, unused] : kwargs) {
      if (std::find(names.begin(), names.end(), key) == names.end()) {
        return RuntimeError(line, absl::StrCat(std::string(what),
                                               " got an unexpected keyword argument '", key, "'"));
      }
    }
    return absl::OkStatus();
  }

  static absl::StatusOr<const std::string*> OptionalString(const Value* value,
                                                           std::string_view what, int line) {
    if (value == nullptr || value->is_none()) return nullptr;
    if (!value->is_string()) {
      return RuntimeError(line, absl::StrCat(std::string(what), " expects a string, got '",
                                             value->TypeName(), "'"));
    }
    return &value->AsString();
  }

  absl::StatusOr<Value> CallBuiltin(const std::string& name, const Args& args, const Kwargs& kwargs,
                                    int line) {
    if (name == "raise_exception") {
      const Value* message = Argument(args, kwargs, 0, "message");
      return RuntimeError(
          line, absl::StrCat("raise_exception: ", message != nullptr ? message->Str() : ""));
    }
    if (name == "namespace" || name == "dict") {
      ValueDict dict;
      for (const Value& arg : args) {
        if (arg.kind() != Value::Kind::kDict) {
          return RuntimeError(line,
                              absl::StrCat(name, "() takes a dict, got '", arg.TypeName(), "'"));
        }
        for (const auto& [key, value] : arg.AsDict().items()) dict.Set(key, value);
      }
      for (const auto& [key, value] : kwargs) dict.Set(key, value);
      if (name == "dict") return Value::FromDict(std::move(dict));
      return Value::NewNamespace(std::move(dict));
    }
    if (name == "range") {
      if (args.empty() || args.size() > 3 || !kwargs.empty()) {
        return RuntimeError(line, "range() takes 1 to 3 integer arguments");
      }
      int64_t bounds[3] = {0, 0, 1};
      for (size_t i = 0; i < args.size(); ++i) {
        if (args[i].kind() != Value::Kind::kInt) {
          return RuntimeError(line, "range() takes integer arguments");
        }
      }
      if (args.size() == 1) {
        bounds[1] = args[0].AsInt();
      } else {
        bounds[0] = args[0].AsInt();
        bounds[1] = args[1].AsInt();
        if (args.size() == 3) bounds[2] = args[2].AsInt();
      }
      if (bounds[2] == 0) return RuntimeError(line, "range() step must not be zero");
      Value::List list;
      for (int64_t i = bounds[0]; bounds[2] > 0 ? i < bounds[1] : i > bounds[1]; i += bounds[2]) {
        RETURN_IF_ERROR(Step(line));
        list.emplace_back(i);
      }
      return Value::FromList(std::move(list));
    }
    return RuntimeError(line, absl::StrCat("'", name, "' is undefined"));
  }

  absl::StatusOr<Value> CallMethod(const Value& object, const std::string& name, const Args& args,
                                   const Kwargs& kwargs, int line) {
    if (object.is_undefined()) {
      return UndefinedError(object, line, absl::StrCat("cannot call method '", name, "'"));
    }
    if (object.is_string()) return CallStringMethod(object.AsString(), name, args, kwargs, line);
    if (object.kind() == Value::Kind::kDict) {
      const ValueDict& dict = object.AsDict();
      if (name == "items" || name == "keys" || name == "values") {
        RETURN_IF_ERROR(CheckArity(name, args, kwargs, {}, line));
        Value::List list;
        for (const auto& [key, value] : dict.items()) {
          if (name == "items") {
            list.push_back(Value::FromList({Value(key), value}));
          } else {
            list.push_back(name == "keys" ? Value(key) : value);
          }
        }
        return Value::FromList(std::move(list));
      }
      if (name == "get") {
        RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"key", "default"}, line));
        const Value* key = Argument(args, kwargs, 0, "key");
        if (key == nullptr || !key->is_string()) {
          return RuntimeError(line, "dict.get() takes a string key");
        }
        const Value* found = dict.Find(key->AsString());
        if (found != nullptr) return *found;
        const Value* fallback = Argument(args, kwargs, 1, "default");
        return fallback != nullptr ? *fallback : Value::None();
      }
    }
    return RuntimeError(
        line, absl::StrCat("'", object.TypeName(), "' object has no method '", name, "'"));
  }

  absl::StatusOr<Value> CallStringMethod(const std::string& s, const std::string& name,
                                         const Args& args, const Kwargs& kwargs, int line) {
    if (name == "startswith" || name == "endswith") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"prefix"}, line));
      const Value* affix = Argument(args, kwargs, 0, "prefix");
      std::vector<Value> candidates;
      if (affix != nullptr && affix->kind() == Value::Kind::kList) {
        candidates = affix->AsList();
      } else if (affix != nullptr) {
        candidates.push_back(*affix);
      }
      if (candidates.empty() && affix == nullptr) {
        return RuntimeError(line, absl::StrCat(name, "() takes a string argument"));
      }
      for (const Value& candidate : candidates) {
        if (!candidate.is_string()) {
          return RuntimeError(
              line, absl::StrCat(name, "() takes strings, got '", candidate.TypeName(), "'"));
        }
        const std::string& a = candidate.AsString();
        const bool match =
            name == "startswith"
                ? s.compare(0, a.size(), a) == 0
                : s.size() >= a.size() && s.compare(s.size() - a.size(), a.size(), a) == 0;
        if (match) return Value(true);
      }
      return Value(false);
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"chars"}, line));
      ASSIGN_OR_RETURN(const std::string* chars,
                       OptionalString(Argument(args, kwargs, 0, "chars"), name, line));
      return Value(Strip(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "split") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"sep", "maxsplit"}, line));
      ASSIGN_OR_RETURN(const std::string* sep,
                       OptionalString(Argument(args, kwargs, 0, "sep"), name, line));
      if (sep != nullptr && sep->empty()) return RuntimeError(line, "split(): empty separator");
      int64_t maxsplit = -1;
      if (const Value* m = Argument(args, kwargs, 1, "maxsplit"); m != nullptr) {
        if (m->kind() != Value::Kind::kInt) return RuntimeError(line, "maxsplit must be an int");
        maxsplit = m->AsInt();
      }
      Value::List parts;
      for (std::string& part : Split(s, sep, maxsplit)) parts.emplace_back(std::move(part));
      return Value::FromList(std::move(parts));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {}, line));
      return Value(ChangeCase(s, name == "upper"   ? 'u'
                                 : name == "lower" ? 'l'
                                 : name == "title" ? 't'
                                                   : 'c'));
    }
    if (name == "replace") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"old", "new", "count"}, line));
      const Value* old = Argument(args, kwargs, 0, "old");
      const Value* with = Argument(args, kwargs, 1, "new");
      const Value* count = Argument(args, kwargs, 2, "count");
      if (old == nullptr || with == nullptr || !old->is_string() || !with->is_string() ||
          (count != nullptr && count->kind() != Value::Kind::kInt)) {
        return RuntimeError(line, "replace() takes two strings and an optional count");
      }
      return Value(
          Replace(s, old->AsString(), with->AsString(), count != nullptr ? count->AsInt() : -1));
    }
    if (name == "find") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"sub"}, line));
      const Value* sub = Argument(args, kwargs, 0, "sub");
      if (sub == nullptr || !sub->is_string()) return RuntimeError(line, "find() takes a string");
      const size_t at = s.find(sub->AsString());
      if (at == std::string::npos) return Value(-1);
      return Value(static_cast<int64_t>(CodePointCount(std::string_view(s).substr(0, at))));
    }
    if (name == "join") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"iterable"}, line));
      const Value* iterable = Argument(args, kwargs, 0, "iterable");
      if (iterable == nullptr) return RuntimeError(line, "join() takes an iterable");
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(*iterable, line));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string()) {
          return RuntimeError(line, absl::StrCat("join(): item ", i, " is a '", items[i].TypeName(),
                                                 "', not a string"));
        }
        if (i > 0) out += s;
        out += items[i].AsString();
      }
      return Value(std::move(out));
    }
    return RuntimeError(line, absl::StrCat("'str' object has no method '", name, "'"));
  }

  absl::StatusOr<int64_t> Length(const Value& value, int line) const {
    switch (value.kind()) {
      case Value::Kind::kUndefined:
        return 0;
      case Value::Kind::kString:
        return static_cast<int64_t>(CodePointCount(value.AsString()));
      case Value::Kind::kList:
        return static_cast<int64_t>(value.AsList().size());
      case Value::Kind::kDict:
      case Value::Kind::kNamespace:
        return static_cast<int64_t>(value.AsDict().size());
      default:
        return RuntimeError(line,
                            absl::StrCat("object of type '", value.TypeName(), "' has no length"));
    }
  }

  absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& subject, const Args& args,
                                    const Kwargs& kwargs, int line) {
    if (name == "length" || name == "count") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {}, line));
      ASSIGN_OR_RETURN(int64_t n, Length(subject, line));
      return Value(n);
    }
    if (name == "tojson") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"indent"}, line));
      int indent = -1;
      if (const Value* i = Argument(args, kwargs, 0, "indent"); i != nullptr && !i->is_none()) {
        if (i->kind() != Value::Kind::kInt || i->AsInt() < 0 || i->AsInt() > 64) {
          return RuntimeError(line, "tojson: indent must be an integer in [0, 64]");
        }
        indent = static_cast<int>(i->AsInt());
      }
      absl::StatusOr<std::string> json = subject.ToJson(indent);
      if (!json.ok()) return RuntimeError(line, std::string(json.status().message()));
      return Value(std::move(*json));
    }
    if (name == "trim") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"chars"}, line));
      ASSIGN_OR_RETURN(const std::string* chars,
                       OptionalString(Argument(args, kwargs, 0, "chars"), name, line));
      return Value(Strip(subject.Str(), chars, true, true));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {}, line));
      return CallStringMethod(subject.Str(), name, args, kwargs, line);
    }
    if (name == "default" || name == "d") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"default_value", "boolean"}, line));
      const Value* fallback = Argument(args, kwargs, 0, "default_value");
      const Value* boolean = Argument(args, kwargs, 1, "boolean");
      const bool use_fallback =
          subject.is_undefined() || (boolean != nullptr && boolean->Truthy() && !subject.Truthy());
      if (!use_fallback) return subject;
      return fallback != nullptr ? *fallback : Value("");
    }
    if (name == "first" || name == "last") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {}, line));
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, line));
      if (items.empty()) return Value::Undefined(absl::StrCat(name, " item"));
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      RETURN_IF_ERROR(CheckArity(name, args, kwargs, {"d", "attribute"}, line));
      ASSIGN_OR_RETURN(const std::string* separator,
                       OptionalString(Argument(args, kwargs, 0, "d"), name, line));
      const Value* attribute = Argument(args, kwargs, 1, "attribute");
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, line));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0 && separator != nullptr) out += *separator;
        if (attribute != nullptr) {
          ASSIGN_OR_RETURN(Value item, GetAttribute(items[i], attribute->Str(), line));
          out += item.Str();
        } else {
          out += items[i].Str();
        }
      }
      return Value(std::move(out));
    }
    if (name == "string") return Value(subject.Str());
    if (name == "int") {
      switch (subject.kind()) {
        case Value::Kind::kInt:
          return subject;
        case Value::Kind::kBool:
          return Value(int64_t{subject.AsBool()});
        case Value::Kind::kFloat:
          if (!std::isfinite(subject.AsFloat())) return Value(0);
          return Value(static_cast<int64_t>(subject.AsFloat()));
        case Value::Kind::kString: {
          const std::string text = Strip(subject.AsString(), nullptr, true, true);
          char* end = nullptr;
          errno = 0;
          const long long parsed = std::strtoll(text.c_str(), &end, 10);
          if (text.empty() || *end != '\0' || errno == ERANGE) return Value(0);
          return Value(static_cast<int64_t>(parsed));
        }
        default:
          return Value(0);
      }
    }
    if (name == "float") {
      if (subject.is_number() || subject.kind() == Value::Kind::kBool) {
        return Value(subject.AsNumber());
      }
      if (subject.is_string()) {
        const std::string text = Strip(subject.AsString(), nullptr, true, true);
        char* end = nullptr;
        const double parsed = std::strtod(text.c_str(), &end);
        if (!text.empty() && *end == '\0') return Value(parsed);
      }
      return Value(0.0);
    }
    if (name == "list") {
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, line));
      return Value::FromList(std::move(items));
    }
    if (name == "items") {
      if (subject.is_undefined()) return Value::FromList({});
      if (subject.kind() != Value::Kind::kDict) {
        return RuntimeError(line,
                            absl::StrCat("items: expected a dict, got '", subject.TypeName(), "'"));
      }
      return CallMethod(subject, "items", {}, {}, line);
    }
    if (name == "replace") {
      return CallStringMethod(subject.Str(), "replace", args, kwargs, line);
    }
    if (name == "reverse") {
      if (subject.is_string()) {
        std::vector<std::string> chars = SplitCodePoints(subject.AsString());
        std::string out;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
        return Value(std::move(out));
      }
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, line));
      std::reverse(items.begin(), items.end());
      return Value::FromList(std::move(items));
    }
    if (name == "safe") return subject;
    if (name == "abs") {
      if (subject.kind() == Value::Kind::kInt) {
        if (subject.AsInt() == INT64_MIN) return RuntimeError(line, "integer overflow");
        return Value(subject.AsInt() < 0 ? -subject.AsInt() : subject.AsInt());
      }
      if (subject.kind() == Value::Kind::kFloat) return Value(std::fabs(subject.AsFloat()));
      return RuntimeError(line,
                          absl::StrCat("bad operand type for abs(): '", subject.TypeName(), "'"));
    }
    if (name == "map") {
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, line));
      Value::List out;
      const Value* attribute = nullptr;
      for (const auto& [key, value] : kwargs) {
        if (key == "attribute") attribute = &value;
      }
      for (const Value& item : items) {
        if (attribute != nullptr) {
          ASSIGN_OR_RETURN(Value mapped, GetAttribute(item, attribute->Str(), line));
          out.push_back(std::move(mapped));
        } else if (!args.empty() && args[0].is_string()) {
          if (!KnownFilters().contains(args[0].AsString())) {
            return RuntimeError(line, absl::StrCat("unknown filter '", args[0].AsString(), "'"));
          }
          const Args rest(args.begin() + 1, args.end());
          ASSIGN_OR_RETURN(Value mapped, ApplyFilter(args[0].AsString(), item, rest, {}, line));
          out.push_back(std::move(mapped));
        } else {
          return RuntimeError(line, "map() takes a filter name or attribute=");
        }
      }
      return Value::FromList(std::move(out));
    }
    if (name == "selectattr" || name == "rejectattr") {
      if (args.empty() || !args[0].is_string()) {
        return RuntimeError(line, absl::StrCat(name, "() takes an attribute name"));
      }
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(subject, line));
      Value::List out;
      for (const Value& item : items) {
        ASSIGN_OR_RETURN(Value attribute, GetAttribute(item, args[0].AsString(), line));
        bool keep = attribute.Truthy();
        if (args.size() > 1) {
          if (!args[1].is_string() || !KnownTests().contains(args[1].AsString())) {
            return RuntimeError(line, absl::StrCat(name, "(): unknown test '", args[1].Str(), "'"));
          }
          const Args rest(args.begin() + 2, args.end());
          ASSIGN_OR_RETURN(keep, ApplyTest(args[1].AsString(), attribute, rest, line));
        }
        if (keep == (name == "selectattr")) out.push_back(item);
      }
      return Value::FromList(std::move(out));
    }
    return RuntimeError(line, absl::StrCat("unknown filter '", name, "'"));
  }

  absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& subject, const Args& args,
                                 int line) {
    using Kind = Value::Kind;
    const Kind kind = subject.kind();
    if (name == "defined") return kind != Kind::kUndefined;
    if (name == "undefined") return kind == Kind::kUndefined;
    if (name == "none") return kind == Kind::kNone;
    if (name == "string") return kind == Kind::kString;
    if (name == "number") return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool;
    if (name == "integer") return kind == Kind::kInt;
    if (name == "float") return kind == Kind::kFloat;
    if (name == "boolean") return kind == Kind::kBool;
    if (name == "true") return kind == Kind::kBool && subject.AsBool();
    if (name == "false") return kind == Kind::kBool && !subject.AsBool();
    if (name == "mapping") return kind == Kind::kDict;
    if (name == "iterable" || name == "sequence") {
      return kind == Kind::kString || kind == Kind::kList || kind == Kind::kDict;
    }
    if (name == "callable") return kind == Kind::kMacro;
    if (name == "odd" || name == "even" || name == "divisibleby") {
      if (kind != Kind::kInt) {
        return RuntimeError(line, absl::StrCat("test '", name, "' needs an integer, got '",
                                               subject.TypeName(), "'"));
      }
      if (name == "divisibleby") {
        if (args.size() != 1 || args[0].kind() != Kind::kInt || args[0].AsInt() == 0) {
          return RuntimeError(line, "divisibleby takes a non-zero integer");
        }
        return subject.AsInt() % args[0].AsInt() == 0;
      }
      return (subject.AsInt() % 2 != 0) == (name == "odd");
    }
    if (args.size() != 1) {
      return RuntimeError(line, absl::StrCat("test '", name, "' takes one argument"));
    }
    static const auto* const kOperators = new absl::flat_hash_map<std::string, std::string>{
        {"eq", "=="}, {"equalto", "=="}, {"==", "=="}, {"ne", "!="}, {"!=", "!="},
        {"lt", "<"},  {"<", "<"},        {"le", "<="}, {"<=", "<="}, {"gt", ">"},
        {">", ">"},   {"ge", ">="},      {">=", ">="}, {"in", "in"}};
    auto op = kOperators->find(name);
    if (op == kOperators->end())
      return RuntimeError(line, absl::StrCat("unknown test '", name, "'"));
    return Compare(op->second, subject, args[0], line);
  }

  absl::StatusOr<bool> Less(const Value& a, const Value& b, int line) const {
    const bool a_number = a.is_number() || a.kind() == Value::Kind::kBool;
    const bool b_number = b.is_number() || b.kind() == Value::Kind::kBool;
    if (a_number && b_number) {
      if (a.kind() == Value::Kind::kInt && b.kind() == Value::Kind::kInt) {
        return a.AsInt() < b.AsInt();
      }
      return a.AsNumber() < b.AsNumber();
    }
    if (a.is_string() && b.is_string()) return a.AsString() < b.AsString();
    if (a.kind() == Value::Kind::kList && b.kind() == Value::Kind::kList) {
      const Value::List& x = a.AsList();
      const Value::List& y = b.AsList();
      for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
        if (x[i] == y[i]) continue;
        return Less(x[i], y[i], line);
      }
      return x.size() < y.size();
    }
    return RuntimeError(line, absl::StrCat("'<' not supported between '", a.TypeName(), "' and '",
                                           b.TypeName(), "'"));
  }

  absl::StatusOr<bool> Contains(const Value& container, const Value& item, int line) const {
    switch (container.kind()) {
      case Value::Kind::kUndefined:
        return false;
      case Value::Kind::kString:
        if (!item.is_string()) {
          return RuntimeError(
              line, absl::StrCat("'in <string>' requires a string, not '", item.TypeName(), "'"));
        }
        return container.AsString().find(item.AsString()) != std::string::npos;
      case Value::Kind::kList:
        return std::find(container.AsList().begin(), container.AsList().end(), item) !=
               container.AsList().end();
      case Value::Kind::kDict:
      case Value::Kind::kNamespace:
        return item.is_string() && container.AsDict().Find(item.AsString()) != nullptr;
      default:
        return RuntimeError(
            line, absl::StrCat("argument of type '", container.TypeName(), "' is not iterable"));
    }
  }

  absl::StatusOr<bool> Compare(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return a == b;
    if (op == "!=") return !(a == b);
    if (op == "in") return Contains(b, a, line);
    if (op == "not in") {
      ASSIGN_OR_RETURN(bool in, Contains(b, a, line));
      return !in;
    }
    if (op == "<") return Less(a, b, line);
    if (op == ">") return Less(b, a, line);
    if (op == "<=") {
      ASSIGN_OR_RETURN(bool greater, Less(b, a, line));
      return !greater;
    }
    ASSIGN_OR_RETURN(bool less, Less(a, b, line));
    return !less;
  }

  absl::StatusOr<Value> Arithmetic(const std::string& op, const Value& a, const Value& b,
                                   int line) {
    using Kind = Value::Kind;
    if (op == "~") return Value(a.Str() + b.Str());
    if (a.is_undefined()) return UndefinedError(a, line, absl::StrCat("cannot apply '", op, "'"));
    if (b.is_undefined()) return UndefinedError(b, line, absl::StrCat("cannot apply '", op, "'"));
    auto type_error = [&] {
      return RuntimeError(line, absl::StrCat("unsupported operand types for ", op, ": '",
                                             a.TypeName(), "' and '", b.TypeName(), "'"));
    };
    const bool numbers =
        (a.is_number() || a.kind() == Kind::kBool) && (b.is_number() || b.kind() == Kind::kBool);
    const bool integers = numbers && a.kind() != Kind::kFloat && b.kind() != Kind::kFloat;
    auto as_int = [](const Value& v) {
      return v.kind() == Kind::kBool ? int64_t{v.AsBool()} : v.AsInt();
    };
    auto overflow = [&] { return RuntimeError(line, absl::StrCat("integer overflow in ", op)); };
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        if (a.AsString().size() + b.AsString().size() > options_.max_output_bytes) {
          return absl::ResourceExhaustedError(absl::StrCat("template error at line ", line,
                                                           ": string exceeds the limit of ",
                                                           options_.max_output_bytes, " bytes"));
        }
        return Value(a.AsString() + b.AsString());
      }
      if (a.kind() == Kind::kList && b.kind() == Kind::kList) {
        Value::List list = a.AsList();
        list.insert(list.end(), b.AsList().begin(), b.AsList().end());
        return Value::FromList(std::move(list));
      }
      if (integers) {
        int64_t r;
        if (__builtin_add_overflow(as_int(a), as_int(b), &r)) return overflow();
        return Value(r);
      }
      if (numbers) return Value(a.AsNumber() + b.AsNumber());
      return type_error();
    }
    if (op == "-") {
      if (integers) {
        int64_t r;
        if (__builtin_sub_overflow(as_int(a), as_int(b), &r)) return overflow();
        return Value(r);
      }
      if (numbers) return Value(a.AsNumber() - b.AsNumber());
      return type_error();
    }
    if (op == "*") {
      if (integers) {
        int64_t r;
        if (__builtin_mul_overflow(as_int(a), as_int(b), &r)) return overflow();
        return Value(r);
      }
      if (numbers) return Value(a.AsNumber() * b.AsNumber());
      const Value* sequence = a.kind() == Kind::kInt ? &b : &a;
      const Value* count = a.kind() == Kind::kInt ? &a : &b;
      if (count->kind() != Kind::kInt ||
          (!sequence->is_string() && sequence->kind() != Kind::kList)) {
        return type_error();
      }
      const int64_t times = std::max<int64_t>(count->AsInt(), 0);
      const size_t unit = sequence->is_string() ? sequence->AsString().size()
                                                : sequence->AsList().size() * sizeof(Value);
      if (unit > 0 && static_cast<uint64_t>(times) > options_.max_output_bytes / unit) {
        return absl::ResourceExhaustedError(absl::StrCat("template error at line ", line,
                                                         ": repetition exceeds the limit of ",
                                                         options_.max_output_bytes, " bytes"));
      }
      if (sequence->is_string()) {
        std::string out;
        for (int64_t i = 0; i < times; ++i) out += sequence->AsString();
        return Value(std::move(out));
      }
      Value::List list;
      for (int64_t i = 0; i < times; ++i) {
        list.insert(list.end(), sequence->AsList().begin(), sequence->AsList().end());
      }
      return Value::FromList(std::move(list));
    }
    if (!numbers) return type_error();
    if (op == "/") {
      if (b.AsNumber() == 0) return RuntimeError(line, "division by zero");
      return Value(a.AsNumber() / b.AsNumber());
    }
    if (op == "//" || op == "%") {
      if (b.AsNumber() == 0) return RuntimeError(line, "division by zero");
      if (integers) {
        const int64_t x = as_int(a);
        const int64_t y = as_int(b);
        if (x == INT64_MIN && y == -1) return overflow();
        int64_t q = x / y;
        int64_t r = x % y;
        if (r != 0 && ((r < 0) != (y < 0))) {
          --q;
          r += y;
        }
        return Value(op == "//" ? q : r);
      }
      const double x = a.AsNumber();
      const double y = b.AsNumber();
      const double q = std::floor(x / y);
      return Value(op == "//" ? q : x - q * y);
    }
    if (op == "**") {
      if (integers && as_int(b) >= 0) {
        int64_t result = 1;
        const int64_t base = as_int(a);
        for (int64_t i = 0; i < as_int(b); ++i) {
          if (__builtin_mul_overflow(result, base, &result)) return overflow();
          if (result == 0 || result == 1) break;
        }
        return Value(result);
      }
      return Value(std::pow(a.AsNumber(), b.AsNumber()));
    }
    return type_error();
  }

  const TemplateOptions& options_;
  std::string* out_;
  std::vector<Frame> frames_;
  int64_t steps_ = 0;
  int macro_depth_ = 0;
};

}  // namespace

Template::Template(std::unique_ptr<Program> program, TemplateOptions options)
    : program_(std::move(program)), options_(options) {}

Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Create(std::string_view source,
                                                           TemplateOptions options) {
  RETURN_IF_ERROR(ValidateUtf8(source));
  auto program = std::make_unique<Program>();
  ASSIGN_OR_RETURN(program->body, ParseTemplate(source, options));
  return std::unique_ptr<Template>(new Template(std::move(program), options));
}

absl::StatusOr<std::string> Template::Render(const ValueDict& context,
                                             size_t max_output_bytes) const {
  std::string out;
  TemplateOptions options = options_;
  options.max_output_bytes = std::min(options.max_output_bytes, max_output_bytes);
  Renderer renderer(options, &out);
  RETURN_IF_ERROR(renderer.Run(program_->body, context));
  return out;
}

}  // namespace ringserve::text::jinja
