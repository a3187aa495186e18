#include "common/text/jinja_value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"

namespace ringserve::text::jinja {

const Value* ValueDict::Find(std::string_view key) const {
  auto it = index_.find(absl::string_view(key.data(), key.size()));
  return it == index_.end() ? nullptr : &items_[it->second].second;
}

size_t ValueDict::size() const { return items_.size(); }

void ValueDict::Set(std::string key, Value value) {
  auto [it, inserted] = index_.try_emplace(key, items_.size());
  if (inserted) {
    items_.emplace_back(std::move(key), std::move(value));
  } else {
    items_[it->second].second = std::move(value);
  }
}

absl::StatusOr<Value> Value::FromJson(const nlohmann::ordered_json& json) {
  return FromJsonAt(json, 0);
}

absl::StatusOr<Value> Value::FromJsonAt(const nlohmann::ordered_json& json, int depth) {
  if (depth > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("JSON nests deeper than the limit ", kMaxJsonDepth));
  }
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null:
      return None();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = json.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List list;
      list.reserve(json.size());
      for (const auto& item : json) {
        ASSIGN_OR_RETURN(Value value, FromJsonAt(item, depth + 1));
        list.push_back(std::move(value));
      }
      return FromList(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict dict;
      for (auto it = json.begin(); it != json.end(); ++it) {
        ASSIGN_OR_RETURN(Value value, FromJsonAt(it.value(), depth + 1));
        dict.Set(it.key(), std::move(value));
      }
      return FromDict(std::move(dict));
    }
    default:
      return absl::InvalidArgumentError("binary JSON values are not supported");
  }
}

double Value::AsNumber() const {
  switch (kind()) {
    case Kind::kBool:
      return AsBool() ? 1 : 0;
    case Kind::kInt:
      return static_cast<double>(AsInt());
    default:
      return AsFloat();
  }
}

const ValueDict& Value::AsDict() const {
  if (kind() == Kind::kNamespace) return *std::get<NamespaceRef>(data_).dict;
  return *std::get<std::shared_ptr<const ValueDict>>(data_);
}

bool Value::Truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return AsBool();
    case Kind::kInt:
      return AsInt() != 0;
    case Kind::kFloat:
      return AsFloat() != 0.0;
    case Kind::kString:
      return !AsString().empty();
    case Kind::kList:
      return !AsList().empty();
    case Kind::kDict:
      return AsDict().size() > 0;
    case Kind::kNamespace:
    case Kind::kMacro:
      return true;
  }
  return false;
}

std::string PythonFloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, then Python's layout: positional when -4 <= exponent < 16.
  char buffer[64];
  const auto result =
      std::to_chars(buffer, buffer + sizeof(buffer), d, std::chars_format::scientific);
  const std::string scientific(buffer, result.ptr);
  const size_t e = scientific.find('e');
  std::string mantissa = scientific.substr(0, e);
  const int exponent = std::stoi(scientific.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (char c : mantissa) {
    if (c != '.') digits.push_back(c);
  }
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      absl::StrAppend(&out, "0.", std::string(-exponent - 1, '0'), digits);
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      absl::StrAppend(&out, digits, std::string(exponent + 1 - digits.size(), '0'), ".0");
    } else {
      absl::StrAppend(&out, digits.substr(0, exponent + 1), ".", digits.substr(exponent + 1));
    }
    return out;
  }
  absl::StrAppend(&out, digits.substr(0, 1));
  if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
  char exponent_text[16];
  std::snprintf(exponent_text, sizeof(exponent_text), "e%c%02d", exponent < 0 ? '-' : '+',
                std::abs(exponent));
  absl::StrAppend(&out, exponent_text);
  return out;
}

namespace {

std::string PythonStringRepr(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos;
  const bool has_double = s.find('"') != std::string::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : s) {
    const auto u = static_cast<uint8_t>(c);
    if (c == quote || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", u);
      out += escaped;
    } else {
      out.push_back(c);
    }
  }
  out.push_back(quote);
  return out;
}

void AppendJsonString(const std::string& s, std::string* out) {
  out->push_back('"');
  for (char c : s) {
    const auto u = static_cast<uint8_t>(c);
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
      default:
        if (u < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", u);
          *out += escaped;
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

}  // namespace

std::string Value::Str() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "";
    case Kind::kString:
      return AsString();
    default:
      return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return AsBool() ? "True" : "False";
    case Kind::kInt:
      return std::to_string(AsInt());
    case Kind::kFloat:
      return PythonFloatRepr(AsFloat());
    case Kind::kString:
      return PythonStringRepr(AsString());
    case Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < AsList().size(); ++i) {
        if (i > 0) out += ", ";
        out += AsList()[i].Repr();
      }
      return out + "]";
    }
    case Kind::kDict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [key, value] : AsDict().items()) {
        if (!first) out += ", ";
        first = false;
        absl::StrAppend(&out, PythonStringRepr(key), ": ", value.Repr());
      }
      return out + "}";
    }
    case Kind::kNamespace:
      return "<Namespace>";
    case Kind::kMacro:
      return "<Macro>";
  }
  return "";
}

std::string Value::TypeName() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "Undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kMacro:
      return "Macro";
  }
  return "";
}

absl::StatusOr<std::string> Value::ToJson(int indent) const {
  std::string out;
  RETURN_IF_ERROR(AppendJson(indent, 0, &out));
  return out;
}

absl::Status Value::AppendJson(int indent, int depth, std::string* out) const {
  if (depth > kMaxJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("tojson: nesting deeper than the limit ", kMaxJsonDepth));
  }
  const std::string item_separator = indent >= 0 ? "," : ", ";
  auto newline = [&](int level) {
    if (indent >= 0) {
      out->push_back('\n');
      out->append(static_cast<size_t>(indent) * level, ' ');
    }
  };
  switch (kind()) {
    case Kind::kNone:
      *out += "null";
      return absl::OkStatus();
    case Kind::kBool:
      *out += AsBool() ? "true" : "false";
      return absl::OkStatus();
    case Kind::kInt:
      *out += std::to_string(AsInt());
      return absl::OkStatus();
    case Kind::kFloat: {
      const double d = AsFloat();
      if (std::isnan(d)) {
        *out += "NaN";
      } else if (std::isinf(d)) {
        *out += d > 0 ? "Infinity" : "-Infinity";
      } else {
        *out += PythonFloatRepr(d);
      }
      return absl::OkStatus();
    }
    case Kind::kString:
      AppendJsonString(AsString(), out);
      return absl::OkStatus();
    case Kind::kList: {
      const List& list = AsList();
      if (list.empty()) {
        *out += "[]";
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t i = 0; i < list.size(); ++i) {
        if (i > 0) *out += item_separator;
        newline(depth + 1);
        RETURN_IF_ERROR(list[i].AppendJson(indent, depth + 1, out));
      }
      newline(depth);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Kind::kDict: {
      const ValueDict& dict = AsDict();
      if (dict.size() == 0) {
        *out += "{}";
        return absl::OkStatus();
      }
      out->push_back('{');
      bool first = true;
      for (const auto& [key, value] : dict.items()) {
        if (!first) *out += item_separator;
        first = false;
        newline(depth + 1);
        AppendJsonString(key, out);
        *out += ": ";
        RETURN_IF_ERROR(value.AppendJson(indent, depth + 1, out));
      }
      newline(depth);
      out->push_back('}');
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tojson: object of type ", TypeName(), " is not JSON serializable"));
  }
}

bool operator==(const Value& a, const Value& b) {
  using Kind = Value::Kind;
  const bool a_number = a.is_number() || a.kind() == Kind::kBool;
  const bool b_number = b.is_number() || b.kind() == Kind::kBool;
  if (a_number && b_number) {
    if (a.kind() != Kind::kFloat && b.kind() != Kind::kFloat) {
      const int64_t x = a.kind() == Kind::kBool ? a.AsBool() : a.AsInt();
      const int64_t y = b.kind() == Kind::kBool ? b.AsBool() : b.AsInt();
      return x == y;
    }
    return a.AsNumber() == b.AsNumber();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kString:
      return a.AsString() == b.AsString();
    case Kind::kList:
      return a.AsList() == b.AsList();
    case Kind::kDict: {
      if (a.AsDict().size() != b.AsDict().size()) return false;
      for (const auto& [key, value] : a.AsDict().items()) {
        const Value* other = b.AsDict().Find(key);
        if (other == nullptr || !(*other == value)) return false;
      }
      return true;
    }
    case Kind::kNamespace:
      return &a.MutableNamespace() == &b.MutableNamespace();
    case Kind::kMacro:
      return a.AsMacro() == b.AsMacro();
    default:
      return false;
  }
}

}  // namespace ringserve::text::jinja
