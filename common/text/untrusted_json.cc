#include "common/text/untrusted_json.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace ringserve::text {
namespace {

using OrderedJson = nlohmann::ordered_json;

// Accepts every SAX event and builds nothing: the inner handler of CheckUntrustedJson.
struct NoDom {
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(OrderedJson::number_integer_t) { return true; }
  bool number_unsigned(OrderedJson::number_unsigned_t) { return true; }
  bool number_float(OrderedJson::number_float_t, const std::string&) { return true; }
  bool string(std::string&) { return true; }
  bool binary(OrderedJson::binary_t&) { return true; }
  bool start_object(size_t) { return true; }
  bool key(std::string&) { return true; }
  bool end_object() { return true; }
  bool start_array(size_t) { return true; }
  bool end_array() { return true; }
};

using Dom = nlohmann::detail::json_sax_dom_parser<OrderedJson>;

// A SAX handler that forwards to `Inner` and stops the parse (the handler returns false) at the
// first value past the limits, remembering why. Not thread-safe; one per parse.
template <typename Inner>
class BoundedSax {
 public:
  BoundedSax(Inner* inner, const JsonLimits& limits) : inner_(inner), limits_(limits) {}

  bool null() { return Count() && inner_->null(); }
  bool boolean(bool v) { return Count() && inner_->boolean(v); }
  bool number_integer(OrderedJson::number_integer_t v) {
    return Count() && inner_->number_integer(v);
  }
  bool number_unsigned(OrderedJson::number_unsigned_t v) {
    return Count() && inner_->number_unsigned(v);
  }
  bool number_float(OrderedJson::number_float_t v, const std::string& s) {
    return Count() && inner_->number_float(v, s);
  }
  bool string(std::string& v) { return Count() && inner_->string(v); }
  bool binary(OrderedJson::binary_t& v) { return Count() && inner_->binary(v); }
  bool start_object(size_t n) { return Open() && inner_->start_object(n); }
  bool key(std::string& k) { return inner_->key(k); }
  bool end_object() {
    --depth_;
    return inner_->end_object();
  }
  bool start_array(size_t n) { return Open() && inner_->start_array(n); }
  bool end_array() {
    --depth_;
    return inner_->end_array();
  }
  bool parse_error(size_t position, const std::string&, const nlohmann::detail::exception& e) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("not valid JSON at byte ", position, ": ", e.what()));
    return false;
  }

  const absl::Status& status() const { return status_; }
  size_t values() const { return values_; }

 private:
  bool Count() {
    if (++values_ > limits_.max_values) {
      status_ = absl::ResourceExhaustedError(
          absl::StrCat("JSON holds more than the limit of ", limits_.max_values, " values"));
      return false;
    }
    return true;
  }
  bool Open() {
    if (++depth_ > limits_.max_depth) {
      status_ = absl::ResourceExhaustedError(
          absl::StrCat("JSON nests deeper than the limit of ", limits_.max_depth, " levels"));
      return false;
    }
    return Count();
  }

  Inner* const inner_;
  const JsonLimits limits_;
  int depth_ = 0;
  size_t values_ = 0;
  absl::Status status_;
};

// Parses `text` into `inner` within `limits`; the number of values on success.
template <typename Inner>
absl::StatusOr<size_t> Run(std::string_view text, const JsonLimits& limits, Inner* inner) {
  BoundedSax<Inner> sax(inner, limits);
  if (OrderedJson::sax_parse(text, &sax)) return sax.values();
  if (!sax.status().ok()) return sax.status();
  return absl::InvalidArgumentError("not valid JSON");
}

}  // namespace

absl::StatusOr<size_t> CheckUntrustedJson(std::string_view text, const JsonLimits& limits) {
  NoDom none;
  return Run(text, limits, &none);
}

absl::StatusOr<OrderedJson> ParseUntrustedJson(std::string_view text, const JsonLimits& limits) {
  OrderedJson root;
  Dom dom(root, /*allow_exceptions=*/false);
  if (absl::StatusOr<size_t> values = Run(text, limits, &dom); !values.ok()) {
    return values.status();
  }
  return root;
}

}  // namespace ringserve::text
