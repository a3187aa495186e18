#include "common/base/flags.h"

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace ringserve::base {
namespace {

constexpr char kHelpPayload[] = "type.ringserve/help";

}  // namespace

bool IsHelp(const absl::Status& status) { return status.GetPayload(kHelpPayload).has_value(); }

void FlagSet::String(const std::string& name, std::string default_value, std::string help) {
  flags_[name] = Flag{std::move(default_value), std::move(help), false, false};
  order_.push_back(name);
}

void FlagSet::Bool(const std::string& name, bool default_value, std::string help) {
  flags_[name] = Flag{default_value ? "true" : "false", std::move(help), true, false};
  order_.push_back(name);
}

absl::Status FlagSet::Parse(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      absl::Status help = absl::CancelledError(Usage());
      help.SetPayload(kHelpPayload, absl::Cord("1"));
      return help;
    }
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = flags_.find(name);
    if (it == flags_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, "\n", Usage()));
    }
    Flag& flag = it->second;
    if (!has_value) {
      if (flag.is_bool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " needs a value"));
      }
    }
    if (flag.is_bool && value != "true" && value != "false") {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, " takes true or false, not '", value, "'"));
    }
    flag.value = value;
    flag.set = true;
  }
  return absl::OkStatus();
}

const std::string& FlagSet::Get(const std::string& name) const { return flags_.at(name).value; }
bool FlagSet::IsSet(const std::string& name) const { return flags_.at(name).set; }
bool FlagSet::GetBool(const std::string& name) const { return Get(name) == "true"; }

absl::StatusOr<int64_t> FlagSet::GetInt(const std::string& name) const {
  int64_t v;
  if (!absl::SimpleAtoi(Get(name), &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, " value '", Get(name), "' is not an integer"));
  }
  return v;
}

absl::StatusOr<double> FlagSet::GetDouble(const std::string& name) const {
  double v;
  if (!absl::SimpleAtod(Get(name), &v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", name, " value '", Get(name), "' is not a number"));
  }
  return v;
}

absl::StatusOr<std::vector<int64_t>> FlagSet::GetIntList(const std::string& name) const {
  std::vector<int64_t> out;
  if (Get(name).empty()) return out;
  for (absl::string_view part : absl::StrSplit(Get(name), ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", name, " entry '", std::string(part), "' is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("usage: ", program_, " [flags]\n");
  for (const auto& name : order_) {
    const Flag& f = flags_.at(name);
    absl::StrAppend(&out, "  --", name, f.is_bool ? "" : " VALUE", "  ", f.help,
                    f.value.empty() ? "" : absl::StrCat(" (default ", f.value, ")"), "\n");
  }
  return out;
}

}  // namespace ringserve::base
