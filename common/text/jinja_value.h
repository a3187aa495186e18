#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace ringserve::text::jinja {

class Value;

// An insertion-ordered string-keyed map, like a Python dict built from JSON. Not thread-safe to
// mutate; a dict inside a Value is never mutated once shared (only a namespace's is).
class ValueDict {
 public:
  // The value of `key`, or nullptr.
  const Value* Find(std::string_view key) const;
  // Inserts or replaces `key`, keeping the position of an existing key.
  void Set(std::string key, Value value);
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }
  size_t size() const;

 private:
  std::vector<std::pair<std::string, Value>> items_;
  absl::flat_hash_map<std::string, size_t> index_;
};

struct Macro;  // defined by the template engine

// A value of the template language, with Python's semantics where templates rely on them
// (truthiness, str(), equality, json.dumps). Lists and dicts are immutable and shared on copy;
// a namespace (from namespace(...)) is the one mutable value, shared by all its copies.
// A Value is not thread-safe to mutate but is freely copied; templates never share values
// across renders.
class Value {
 public:
  enum class Kind {
    kUndefined,
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kList,
    kDict,
    kNamespace,
    kMacro
  };
  using List = std::vector<Value>;

  // Undefined; `name` says what was looked up, for error messages.
  Value() = default;
  static Value Undefined(std::string name) {
    return Value(FromData{}, UndefinedTag{std::move(name)});
  }
  static Value None() { return Value(FromData{}, NoneTag{}); }
  // Scalars convert implicitly, like literals.
  Value(bool b) : data_(b) {}
  Value(int64_t i) : data_(i) {}
  Value(int i) : data_(int64_t{i}) {}
  Value(double d) : data_(d) {}
  Value(std::string s) : data_(std::move(s)) {}
  Value(const char* s) : data_(std::string(s)) {}
  static Value FromList(List list) {
    return Value(FromData{}, std::make_shared<const List>(std::move(list)));
  }
  static Value FromDict(ValueDict dict) {
    return Value(FromData{}, std::make_shared<const ValueDict>(std::move(dict)));
  }
  static Value NewNamespace(ValueDict dict) {
    return Value(FromData{}, NamespaceRef{std::make_shared<ValueDict>(std::move(dict))});
  }
  static Value FromMacro(const Macro* macro) { return Value(FromData{}, macro); }
  // JSON numbers that are integers become kInt, others kFloat; objects keep their key order.
  // Fails for JSON nested deeper than kMaxJsonDepth.
  static absl::StatusOr<Value> FromJson(const nlohmann::ordered_json& json);
  static constexpr int kMaxJsonDepth = 512;

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_number() const { return kind() == Kind::kInt || kind() == Kind::kFloat; }

  bool AsBool() const { return std::get<bool>(data_); }
  int64_t AsInt() const { return std::get<int64_t>(data_); }
  double AsFloat() const { return std::get<double>(data_); }
  // The number as a double (kBool, kInt or kFloat).
  double AsNumber() const;
  const std::string& AsString() const { return std::get<std::string>(data_); }
  const List& AsList() const { return *std::get<std::shared_ptr<const List>>(data_); }
  // The entries of a dict or a namespace.
  const ValueDict& AsDict() const;
  ValueDict& MutableNamespace() const { return *std::get<NamespaceRef>(data_).dict; }
  const Macro* AsMacro() const { return std::get<const Macro*>(data_); }
  const std::string& undefined_name() const { return std::get<UndefinedTag>(data_).name; }

  // Python's bool(): false for undefined, none, false, 0, 0.0 and empty strings/lists/dicts.
  bool Truthy() const;
  // Python's str() (what {{ value }} prints): "" for undefined, "None", "True", repr for
  // containers.
  std::string Str() const;
  // Python's repr().
  std::string Repr() const;
  // Python's json.dumps(value, ensure_ascii=False, indent=indent) (indent < 0: none), as
  // HuggingFace's tojson filter does. Fails for undefined values, namespaces and macros.
  absl::StatusOr<std::string> ToJson(int indent = -1) const;
  // The name of the Python type, for error messages ("str", "list", ...).
  std::string TypeName() const;

  // Python's ==.
  friend bool operator==(const Value& a, const Value& b);

 private:
  struct UndefinedTag {
    std::string name;
  };
  struct NoneTag {};
  struct NamespaceRef {
    std::shared_ptr<ValueDict> dict;
  };
  using Data = std::variant<UndefinedTag, NoneTag, bool, int64_t, double, std::string,
                            std::shared_ptr<const List>, std::shared_ptr<const ValueDict>,
                            NamespaceRef, const Macro*>;

  struct FromData {};
  Value(FromData, Data data) : data_(std::move(data)) {}

  static absl::StatusOr<Value> FromJsonAt(const nlohmann::ordered_json& json, int depth);
  absl::Status AppendJson(int indent, int depth, std::string* out) const;

  Data data_;
};

// Python's repr() of a float (shortest round-trip digits; "1e-05", "3.0", "inf").
std::string PythonFloatRepr(double d);

}  // namespace ringserve::text::jinja
