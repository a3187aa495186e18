#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ringserve::base {

// Command-line flags in `--name value` or `--name=value` form (booleans also bare `--name`).
// Declared up front; unknown flags, missing values and malformed numbers are errors naming the
// flag; `--help` (or `-h`) stops parsing with a status that IsHelp recognises. Not thread-safe;
// parse once at startup.
class FlagSet {
 public:
  explicit FlagSet(std::string program) : program_(std::move(program)) {}

  void String(const std::string& name, std::string default_value, std::string help);
  void Bool(const std::string& name, bool default_value, std::string help);

  // Parses args (without the program name). Positional arguments are collected. On `--help` or
  // `-h` returns a status for which IsHelp holds, whose message is Usage().
  absl::Status Parse(const std::vector<std::string>& args);

  const std::string& Get(const std::string& name) const;
  bool IsSet(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name) const;
  absl::StatusOr<double> GetDouble(const std::string& name) const;
  // Comma-separated integers ("1,2,3").
  absl::StatusOr<std::vector<int64_t>> GetIntList(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  std::string Usage() const;

 private:
  struct Flag {
    std::string value;
    std::string help;
    bool is_bool = false;
    bool set = false;
  };
  std::string program_;
  std::map<std::string, Flag> flags_;
  std::vector<std::string> order_;
  std::vector<std::string> positional_;
};

// True for the status FlagSet::Parse returns on `--help`: the program prints its message (the
// usage) to stdout and exits 0.
bool IsHelp(const absl::Status& status);

}  // namespace ringserve::base
