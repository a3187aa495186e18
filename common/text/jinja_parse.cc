#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/text/jinja_syntax.h"
#include "common/text/utf8.h"

namespace ringserve::text::jinja {

absl::Status SyntaxError(int line, std::string_view message) {
  return absl::InvalidArgumentError(
      absl::StrCat("template syntax error at line ", line, ": ", std::string(message)));
}

const absl::flat_hash_set<std::string>& KnownFilters() {
  static const auto* const filters = new absl::flat_hash_set<std::string>{
      "abs",   "capitalize", "count",   "d",       "default", "first",      "float",
      "int",   "items",      "join",    "last",    "length",  "list",       "lower",
      "map",   "rejectattr", "replace", "reverse", "safe",    "selectattr", "string",
      "title", "tojson",     "trim",    "upper"};
  return *filters;
}

const absl::flat_hash_set<std::string>& KnownTests() {
  static const auto* const tests = new absl::flat_hash_set<std::string>{
      "boolean",   "callable", "defined", "divisibleby", "eq",      "equalto",  "even",   "false",
      "float",     "ge",       "gt",      "in",          "integer", "iterable", "le",     "lt",
      "mapping",   "ne",       "none",    "number",      "odd",     "sequence", "string", "true",
      "undefined", "==",       "!=",      "<",           "<=",      ">",        ">="};
  return *tests;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Lexer

enum class Tok {
  kText,
  kVarBegin,
  kVarEnd,
  kBlockBegin,
  kBlockEnd,
  kName,
  kString,
  kInt,
  kFloat,
  kOp,
  kEof
};

struct Token {
  Tok kind;
  std::string text;  // text, name, operator or decoded string literal
  int64_t int_value = 0;
  double float_value = 0;
  int line = 1;
};

bool IsNameStart(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsNameChar(char c) { return IsNameStart(c) || (c >= '0' && c <= '9'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Splits a template into text and tag tokens, applying whitespace control (-, +, trim_blocks,
// lstrip_blocks) to the text. Not thread-safe; one per Template::Create.
class Lexer {
 public:
  Lexer(std::string_view source, const TemplateOptions& options) : options_(options) {
    // Like Jinja2: newlines normalized to \n, and one trailing newline dropped.
    source_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        source_.push_back('\n');
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        source_.push_back(source[i]);
      }
    }
    if (!source_.empty() && source_.back() == '\n') source_.pop_back();
  }

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < source_.size()) {
      const size_t start = FindTagStart(pos_);
      EmitText(pos_, start);
      if (start == source_.size()) break;
      const char kind = source_[start + 1];
      pos_ = start + 2;
      char modifier = 0;
      if (pos_ < source_.size() && (source_[pos_] == '-' || source_[pos_] == '+')) {
        modifier = source_[pos_++];
      }
      if (modifier == '-') {
        StripPreviousText(/*only_blanks=*/false, start);
      } else if (modifier != '+' && options_.lstrip_blocks && (kind == '%' || kind == '#')) {
        StripPreviousText(/*only_blanks=*/true, start);
      }
      if (kind == '#') {
        RETURN_IF_ERROR(LexComment());
      } else {
        RETURN_IF_ERROR(LexTag(kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin));
      }
    }
    tokens_.push_back({Tok::kEof, "", 0, 0, line_});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t from) const {
    for (size_t i = from; i + 1 < source_.size(); ++i) {
      if (source_[i] == '{' &&
          (source_[i + 1] == '{' || source_[i + 1] == '%' || source_[i + 1] == '#')) {
        return i;
      }
    }
    return source_.size();
  }

  void CountLines(size_t begin, size_t end) {
    line_ += static_cast<int>(std::count(source_.begin() + begin, source_.begin() + end, '\n'));
  }

  void EmitText(size_t begin, size_t end) {
    const int line = line_;
    CountLines(begin, end);
    std::string_view text(source_.data() + begin, end - begin);
    if (strip_next_) {
      while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
    } else if (trim_next_newline_ && !text.empty() && text.front() == '\n') {
      text.remove_prefix(1);
    }
    strip_next_ = false;
    trim_next_newline_ = false;
    if (!text.empty()) tokens_.push_back({Tok::kText, std::string(text), 0, 0, line});
  }

  // Strips whitespace before the tag at `tag_start` from the text just emitted: all of it, or
  // (lstrip_blocks) only spaces and tabs, and only when they start the line.
  void StripPreviousText(bool only_blanks, size_t tag_start) {
    if (tokens_.empty() || tokens_.back().kind != Tok::kText) return;
    std::string& text = tokens_.back().text;
    if (only_blanks) {
      size_t i = tag_start;
      while (i > 0 && (source_[i - 1] == ' ' || source_[i - 1] == '\t')) --i;
      if (i > 0 && source_[i - 1] != '\n') return;
      size_t blanks = tag_start - i;
      while (blanks > 0 && !text.empty() && (text.back() == ' ' || text.back() == '\t')) {
        text.pop_back();
        --blanks;
      }
    } else {
      while (!text.empty() && IsSpace(text.back())) text.pop_back();
    }
    if (text.empty()) tokens_.pop_back();
  }

  absl::Status LexComment() {
    const size_t end = source_.find("#}", pos_);
    if (end == std::string::npos) return SyntaxError(line_, "unclosed comment");
    CountLines(pos_, end);
    const bool strip = end > pos_ && source_[end - 1] == '-';
    pos_ = end + 2;
    strip_next_ = strip;
    trim_next_newline_ = !strip && options_.trim_blocks;
    return absl::OkStatus();
  }

  absl::Status LexTag(Tok begin) {
    const size_t first_token = tokens_.size();
    tokens_.push_back({begin, "", 0, 0, line_});
    const std::string_view end_marker = begin == Tok::kVarBegin ? "}}" : "%}";
    int depth = 0;
    while (true) {
      while (pos_ < source_.size() && IsSpace(source_[pos_])) {
        if (source_[pos_] == '\n') ++line_;
        ++pos_;
      }
      if (pos_ >= source_.size()) {
        return SyntaxError(line_, begin == Tok::kVarBegin ? "unclosed '{{'" : "unclosed '{%'");
      }
      const std::string_view rest(source_.data() + pos_, source_.size() - pos_);
      if (depth == 0 && (rest.substr(0, 2) == end_marker ||
                         (rest[0] == '-' && rest.substr(1, 2) == end_marker))) {
        const bool strip = rest[0] == '-';
        pos_ += strip ? 3 : 2;
        tokens_.push_back(
            {begin == Tok::kVarBegin ? Tok::kVarEnd : Tok::kBlockEnd, "", 0, 0, line_});
        strip_next_ = strip;
        trim_next_newline_ = !strip && begin == Tok::kBlockBegin && options_.trim_blocks;
        break;
      }
      const char c = rest[0];
      if (IsNameStart(c)) {
        size_t n = 1;
        while (n < rest.size() && IsNameChar(rest[n])) ++n;
        tokens_.push_back({Tok::kName, std::string(rest.substr(0, n)), 0, 0, line_});
        pos_ += n;
      } else if (IsDigit(c)) {
        RETURN_IF_ERROR(LexNumber(rest));
      } else if (c == '\'' || c == '"') {
        RETURN_IF_ERROR(LexString(rest));
      } else {
        static constexpr std::string_view kOps[] = {
            "//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
            ">",  "=",  "(",  ")",  "[",  "]",  "{", "}", ",", ".", ":", "|"};
        std::string_view op;
        for (std::string_view candidate : kOps) {
          if (rest.substr(0, candidate.size()) == candidate) {
            op = candidate;
            break;
          }
        }
        if (op.empty()) {
          return SyntaxError(line_, absl::StrCat("unexpected character '", std::string(1, c), "'"));
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        tokens_.push_back({Tok::kOp, std::string(op), 0, 0, line_});
        pos_ += op.size();
      }
    }
    // {% raw %} ... {% endraw %}: the text in between is literal.
    if (begin == Tok::kBlockBegin && tokens_.size() == first_token + 3 &&
        tokens_[first_token + 1].kind == Tok::kName && tokens_[first_token + 1].text == "raw") {
      tokens_.resize(first_token);
      return LexRaw();
    }
    return absl::OkStatus();
  }

  absl::Status LexRaw() {
    for (size_t at = source_.find("{%", pos_); at != std::string::npos;
         at = source_.find("{%", at + 2)) {
      size_t i = at + 2;
      const bool strip_before = i < source_.size() && source_[i] == '-';
      if (strip_before) ++i;
      while (i < source_.size() && IsSpace(source_[i])) ++i;
      if (source_.compare(i, 6, "endraw") != 0) continue;
      i += 6;
      while (i < source_.size() && IsSpace(source_[i])) ++i;
      const bool strip_after = i < source_.size() && source_[i] == '-';
      if (strip_after) ++i;
      if (source_.compare(i, 2, "%}") != 0) continue;
      std::string text = source_.substr(pos_, at - pos_);
      if (strip_next_) {
        text.erase(0, std::find_if_not(text.begin(), text.end(), IsSpace) - text.begin());
      }
      if (strip_before) {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      }
      const int line = line_;
      CountLines(pos_, i + 2);
      if (!text.empty()) tokens_.push_back({Tok::kText, std::move(text), 0, 0, line});
      pos_ = i + 2;
      strip_next_ = strip_after;
      trim_next_newline_ = !strip_after && options_.trim_blocks;
      return absl::OkStatus();
    }
    return SyntaxError(line_, "missing '{% endraw %}'");
  }

  absl::Status LexNumber(std::string_view rest) {
    size_t n = 0;
    while (n < rest.size() && IsDigit(rest[n])) ++n;
    bool is_float = false;
    if (n + 1 < rest.size() && rest[n] == '.' && IsDigit(rest[n + 1])) {
      is_float = true;
      ++n;
      while (n < rest.size() && IsDigit(rest[n])) ++n;
    }
    if (n < rest.size() && (rest[n] == 'e' || rest[n] == 'E')) {
      size_t m = n + 1;
      if (m < rest.size() && (rest[m] == '+' || rest[m] == '-')) ++m;
      if (m < rest.size() && IsDigit(rest[m])) {
        is_float = true;
        n = m;
        while (n < rest.size() && IsDigit(rest[n])) ++n;
      }
    }
    const std::string text(rest.substr(0, n));
    Token token{is_float ? Tok::kFloat : Tok::kInt, text, 0, 0, line_};
    if (is_float) {
      token.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      token.int_value = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) {
        return SyntaxError(line_, absl::StrCat("integer ", text, " exceeds the 64-bit range"));
      }
    }
    tokens_.push_back(std::move(token));
    pos_ += n;
    return absl::OkStatus();
  }

  absl::Status LexString(std::string_view rest) {
    const char quote = rest[0];
    std::string value;
    size_t i = 1;
    const int line = line_;
    for (; i < rest.size() && rest[i] != quote; ++i) {
      if (rest[i] == '\n') ++line_;
      if (rest[i] != '\\' || i + 1 >= rest.size()) {
        value.push_back(rest[i]);
        continue;
      }
      const char e = rest[++i];
      switch (e) {
        case 'n':
          value.push_back('\n');
          break;
        case 't':
          value.push_back('\t');
          break;
        case 'r':
          value.push_back('\r');
          break;
        case 'b':
          value.push_back('\b');
          break;
        case 'f':
          value.push_back('\f');
          break;
        case 'v':
          value.push_back('\v');
          break;
        case 'a':
          value.push_back('\a');
          break;
        case '0':
          value.push_back('\0');
          break;
        case '\\':
        case '\'':
        case '"':
          value.push_back(e);
          break;
        case '\n':
          ++line_;
          break;
        case 'x':
        case 'u':
        case 'U': {
          const size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + digits >= rest.size()) return SyntaxError(line_, "truncated escape sequence");
          const std::string hex(rest.substr(i + 1, digits));
          char* end = nullptr;
          const unsigned long code = std::strtoul(hex.c_str(), &end, 16);
          if (end != hex.c_str() + digits || code > 0x10FFFF || (code >= 0xD800 && code < 0xE000)) {
            return SyntaxError(line_, absl::StrCat("invalid escape \\", std::string(1, e), hex));
          }
          AppendCodePoint(static_cast<char32_t>(code), &value);
          i += digits;
          break;
        }
        default:
          value.push_back('\\');
          value.push_back(e);
      }
    }
    if (i >= rest.size()) return SyntaxError(line, "unterminated string literal");
    tokens_.push_back({Tok::kString, std::move(value), 0, 0, line});
    pos_ += i + 1;
    return absl::OkStatus();
  }

  const TemplateOptions& options_;
  std::string source_;
  size_t pos_ = 0;
  int line_ = 1;
  bool strip_next_ = false;         // a '-' closed the last tag: strip the next text's start
  bool trim_next_newline_ = false;  // trim_blocks after the last block tag
  std::vector<Token> tokens_;
};

// ---------------------------------------------------------------------------------------------
// Parser

// Whether `expr` is more than `limit` levels deep (looks no deeper than that). Chains such as
// a + b + c + ... are parsed by loops, so this, not the parser's recursion, bounds their depth,
// and with it the evaluator's recursion.
bool TooDeep(const Expr& expr, int limit) {
  if (limit <= 0) return true;
  for (const auto& arg : expr.args) {
    if (arg != nullptr && TooDeep(*arg, limit - 1)) return true;
  }
  for (const auto& [name, value] : expr.kwargs) {
    if (TooDeep(*value, limit - 1)) return true;
  }
  return false;
}

// Builds the syntax tree from the tokens, with Jinja2's operator precedence. Checks filter and
// test names, tag nesting and depth limits. Not thread-safe; one per Template::Create.
class Parser {
 public:
  Parser(std::vector<Token> tokens, const TemplateOptions& options)
      : tokens_(std::move(tokens)), options_(options) {}

  absl::StatusOr<Body> ParseTemplate() {
    Body body;
    std::string end;
    RETURN_IF_ERROR(ParseBody(&body, {}, &end));
    return body;
  }

 private:
  using ExprPtr = std::unique_ptr<Expr>;

  // Tracks nesting depth while parsing; errors past options.max_nesting.
  class DepthGuard {
   public:
    explicit DepthGuard(Parser* parser) : parser_(parser) { ++parser_->depth_; }
    ~DepthGuard() { --parser_->depth_; }
    bool exceeded() const { return parser_->depth_ > parser_->options_.max_nesting; }

   private:
    Parser* parser_;
  };

  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& token = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return token;
  }
  bool IsOp(std::string_view op, size_t ahead = 0) const {
    return Peek(ahead).kind == Tok::kOp && Peek(ahead).text == op;
  }
  bool IsName(std::string_view name, size_t ahead = 0) const {
    return Peek(ahead).kind == Tok::kName && Peek(ahead).text == name;
  }
  bool SkipOp(std::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(std::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  static std::string Describe(const Token& token) {
    switch (token.kind) {
      case Tok::kEof:
        return "end of template";
      case Tok::kVarEnd:
        return "'}}'";
      case Tok::kBlockEnd:
        return "'%}'";
      case Tok::kText:
        return "text";
      case Tok::kString:
        return "string literal";
      default:
        return absl::StrCat("'", token.text, "'");
    }
  }
  absl::Status Unexpected(std::string_view expected) const {
    return SyntaxError(Peek().line, absl::StrCat("expected ", std::string(expected), ", found ",
                                                 Describe(Peek())));
  }
  absl::Status ExpectOp(std::string_view op) {
    if (!SkipOp(op)) return Unexpected(absl::StrCat("'", std::string(op), "'"));
    return absl::OkStatus();
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().kind != Tok::kBlockEnd) return Unexpected("'%}'");
    Next();
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().kind != Tok::kName) return Unexpected("a name");
    return Next().text;
  }

  // Parses statements until a block tag named in `end_tags` (consumed up to its name, which is
  // stored in `*end`), or the end of the template when `end_tags` is empty.
  absl::Status ParseBody(Body* body, std::initializer_list<std::string_view> end_tags,
                         std::string* end) {
    DepthGuard guard(this);
    if (guard.exceeded()) {
      return SyntaxError(Peek().line,
                         absl::StrCat("blocks nest deeper than the limit ", options_.max_nesting));
    }
    while (true) {
      const Token& token = Peek();
      switch (token.kind) {
        case Tok::kEof:
          if (end_tags.size() == 0) return absl::OkStatus();
          return SyntaxError(token.line, absl::StrCat("unexpected end of template; expected '",
                                                      std::string(*end_tags.begin()), "'"));
        case Tok::kText: {
          Stmt stmt{Stmt::Kind::kText, token.line};
          stmt.text = Next().text;
          body->push_back(std::move(stmt));
          break;
        }
        case Tok::kVarBegin: {
          Next();
          Stmt stmt{Stmt::Kind::kOutput, token.line};
          ASSIGN_OR_RETURN(stmt.expr, ParseTuple(true));
          if (Peek().kind != Tok::kVarEnd) return Unexpected("'}}'");
          Next();
          body->push_back(std::move(stmt));
          break;
        }
        case Tok::kBlockBegin: {
          const Token& name = Peek(1);
          if (name.kind != Tok::kName) {
            Next();
            return Unexpected("a tag name");
          }
          if (std::find(end_tags.begin(), end_tags.end(), name.text) != end_tags.end()) {
            Next();
            *end = Next().text;
            return absl::OkStatus();
          }
          Next();
          RETURN_IF_ERROR(ParseStatement(body));
          break;
        }
        default:
          return Unexpected("text or a tag");
      }
    }
  }

  absl::Status ParseStatement(Body* body) {
    const int line = Peek().line;
    const std::string tag = Next().text;
    std::string end;
    if (tag == "if") {
      Stmt stmt{Stmt::Kind::kIf, line};
      ASSIGN_OR_RETURN(ExprPtr condition, ParseExpression(true));
      RETURN_IF_ERROR(ExpectBlockEnd());
      Body branch;
      RETURN_IF_ERROR(ParseBody(&branch, {"endif", "elif", "else"}, &end));
      stmt.branches.emplace_back(std::move(condition), std::move(branch));
      while (end == "elif") {
        ASSIGN_OR_RETURN(condition, ParseExpression(true));
        RETURN_IF_ERROR(ExpectBlockEnd());
        branch.clear();
        RETURN_IF_ERROR(ParseBody(&branch, {"endif", "elif", "else"}, &end));
        stmt.branches.emplace_back(std::move(condition), std::move(branch));
      }
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        RETURN_IF_ERROR(ParseBody(&stmt.else_body, {"endif"}, &end));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      body->push_back(std::move(stmt));
    } else if (tag == "for") {
      Stmt stmt{Stmt::Kind::kFor, line};
      ASSIGN_OR_RETURN(stmt.targets, ParseTargets());
      if (!SkipName("in")) return Unexpected("'in'");
      ASSIGN_OR_RETURN(stmt.expr, ParseTuple(false));
      if (SkipName("if")) {
        ASSIGN_OR_RETURN(stmt.condition, ParseExpression(true));
      }
      if (IsName("recursive")) {
        return SyntaxError(line, "recursive loops are not supported");
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      ++loop_depth_;
      RETURN_IF_ERROR(ParseBody(&stmt.body, {"endfor", "else"}, &end));
      --loop_depth_;
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        RETURN_IF_ERROR(ParseBody(&stmt.else_body, {"endfor"}, &end));
      }
      RETURN_IF_ERROR(ExpectBlockEnd());
      body->push_back(std::move(stmt));
    } else if (tag == "set") {
      ASSIGN_OR_RETURN(std::string first, ExpectName());
      if (SkipOp(".")) {
        Stmt stmt{Stmt::Kind::kSetAttribute, line};
        stmt.targets = {first};
        ASSIGN_OR_RETURN(stmt.text, ExpectName());
        RETURN_IF_ERROR(ExpectOp("="));
        ASSIGN_OR_RETURN(stmt.expr, ParseTuple(true));
        RETURN_IF_ERROR(ExpectBlockEnd());
        body->push_back(std::move(stmt));
        return absl::OkStatus();
      }
      std::vector<std::string> targets = {first};
      while (SkipOp(",")) {
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        targets.push_back(std::move(name));
      }
      if (Peek().kind == Tok::kBlockEnd && targets.size() == 1) {
        Next();
        Stmt stmt{Stmt::Kind::kSetBlock, line};
        stmt.targets = std::move(targets);
        RETURN_IF_ERROR(ParseBody(&stmt.body, {"endset"}, &end));
        RETURN_IF_ERROR(ExpectBlockEnd());
        body->push_back(std::move(stmt));
        return absl::OkStatus();
      }
      Stmt stmt{Stmt::Kind::kSet, line};
      stmt.targets = std::move(targets);
      RETURN_IF_ERROR(ExpectOp("="));
      ASSIGN_OR_RETURN(stmt.expr, ParseTuple(true));
      RETURN_IF_ERROR(ExpectBlockEnd());
      body->push_back(std::move(stmt));
    } else if (tag == "break" || tag == "continue") {
      if (loop_depth_ == 0) return SyntaxError(line, absl::StrCat("'", tag, "' outside a loop"));
      RETURN_IF_ERROR(ExpectBlockEnd());
      body->push_back(Stmt{tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue, line});
    } else if (tag == "macro") {
      auto macro = std::make_unique<Macro>();
      ASSIGN_OR_RETURN(macro->name, ExpectName());
      RETURN_IF_ERROR(ExpectOp("("));
      while (!IsOp(")")) {
        ASSIGN_OR_RETURN(std::string param, ExpectName());
        macro->params.push_back(std::move(param));
        ExprPtr fallback;
        if (SkipOp("=")) {
          ASSIGN_OR_RETURN(fallback, ParseExpression(true));
        }
        macro->defaults.push_back(std::move(fallback));
        if (!SkipOp(",")) break;
      }
      RETURN_IF_ERROR(ExpectOp(")"));
      RETURN_IF_ERROR(ExpectBlockEnd());
      const int saved_loop_depth = loop_depth_;
      loop_depth_ = 0;
      RETURN_IF_ERROR(ParseBody(&macro->body, {"endmacro"}, &end));
      loop_depth_ = saved_loop_depth;
      RETURN_IF_ERROR(ExpectBlockEnd());
      Stmt stmt{Stmt::Kind::kMacro, line};
      stmt.macro = std::move(macro);
      body->push_back(std::move(stmt));
    } else if (tag == "generation") {
      // HuggingFace's marker for assistant tokens; renders its body.
      RETURN_IF_ERROR(ExpectBlockEnd());
      Stmt stmt{Stmt::Kind::kBlock, line};
      RETURN_IF_ERROR(ParseBody(&stmt.body, {"endgeneration"}, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      body->push_back(std::move(stmt));
    } else {
      return SyntaxError(line, absl::StrCat("unknown or misplaced tag '", tag, "'"));
    }
    return absl::OkStatus();
  }

  // Loop and assignment targets: `name` or `name, name, ...`, optionally in parentheses.
  absl::StatusOr<std::vector<std::string>> ParseTargets() {
    const bool parenthesized = SkipOp("(");
    std::vector<std::string> targets;
    do {
      ASSIGN_OR_RETURN(std::string name, ExpectName());
      targets.push_back(std::move(name));
    } while (SkipOp(","));
    if (parenthesized) RETURN_IF_ERROR(ExpectOp(")"));
    return targets;
  }

  // An expression, or a tuple (kept as a list) when commas follow.
  absl::StatusOr<ExprPtr> ParseTuple(bool with_condition) {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseExpression(with_condition));
    if (!IsOp(",")) return first;
    auto tuple = std::make_unique<Expr>(Expr{Expr::Kind::kList, line});
    tuple->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (Peek().kind == Tok::kVarEnd || Peek().kind == Tok::kBlockEnd) break;
      ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(with_condition));
      tuple->args.push_back(std::move(item));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool with_condition) {
    DepthGuard guard(this);
    if (guard.exceeded()) {
      return SyntaxError(Peek().line, absl::StrCat("expression nests deeper than the limit ",
                                                   options_.max_nesting));
    }
    ASSIGN_OR_RETURN(ExprPtr expr, ParseOr());
    while (with_condition && IsName("if")) {
      const int line = Next().line;
      auto condition = std::make_unique<Expr>(Expr{Expr::Kind::kCondition, line});
      ASSIGN_OR_RETURN(ExprPtr test, ParseOr());
      ExprPtr otherwise;
      if (SkipName("else")) {
        ASSIGN_OR_RETURN(otherwise, ParseExpression(true));
      }
      condition->args.push_back(std::move(expr));
      condition->args.push_back(std::move(test));
      condition->args.push_back(std::move(otherwise));
      expr = std::move(condition);
    }
    if (TooDeep(*expr, options_.max_nesting)) {
      return SyntaxError(expr->line, absl::StrCat("expression nests deeper than the limit ",
                                                  options_.max_nesting));
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseAnd());
    while (IsName("or")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr right, ParseAnd());
      left = Binary(Expr::Kind::kOr, line, "or", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseNot());
    while (IsName("and")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr right, ParseNot());
      left = Binary(Expr::Kind::kAnd, line, "and", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      if (guard.exceeded()) return SyntaxError(Peek().line, "'not' nests too deeply");
      const int line = Next().line;
      auto expr = std::make_unique<Expr>(Expr{Expr::Kind::kNot, line});
      ASSIGN_OR_RETURN(ExprPtr operand, ParseNot());
      expr->args.push_back(std::move(operand));
      return expr;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseMath1());
    std::unique_ptr<Expr> compare;
    while (true) {
      std::string op;
      if (Peek().kind == Tok::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "not in";
      } else {
        break;
      }
      if (compare == nullptr) {
        compare = std::make_unique<Expr>(Expr{Expr::Kind::kCompare, line});
        compare->args.push_back(std::move(first));
      }
      ASSIGN_OR_RETURN(ExprPtr operand, ParseMath1());
      compare->args.push_back(std::move(operand));
      compare->ops.push_back(std::move(op));
    }
    if (compare != nullptr) return compare;
    return first;
  }

  absl::StatusOr<ExprPtr> ParseMath1() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseConcat());
    while (IsOp("+") || IsOp("-")) {
      const Token& op = Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParseConcat());
      left = Binary(Expr::Kind::kBinary, op.line, op.text, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseConcat() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseMath2());
    while (IsOp("~")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr right, ParseMath2());
      left = Binary(Expr::Kind::kBinary, line, "~", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseMath2() {
    ASSIGN_OR_RETURN(ExprPtr left, ParsePow());
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& op = Next();
      ASSIGN_OR_RETURN(ExprPtr right, ParsePow());
      left = Binary(Expr::Kind::kBinary, op.line, op.text, std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParsePow() {
    ASSIGN_OR_RETURN(ExprPtr left, ParseUnary(true));
    while (IsOp("**")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr right, ParseUnary(true));
      left = Binary(Expr::Kind::kBinary, line, "**", std::move(left), std::move(right));
    }
    return left;
  }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filters) {
    DepthGuard guard(this);
    if (guard.exceeded()) {
      return SyntaxError(Peek().line, absl::StrCat("expression nests deeper than the limit ",
                                                   options_.max_nesting));
    }
    ExprPtr expr;
    if (IsOp("-") || IsOp("+")) {
      const Token& op = Next();
      expr = std::make_unique<Expr>(
          Expr{op.text == "-" ? Expr::Kind::kNeg : Expr::Kind::kPos, op.line});
      ASSIGN_OR_RETURN(ExprPtr operand, ParseUnary(false));
      expr->args.push_back(std::move(operand));
    } else {
      ASSIGN_OR_RETURN(expr, ParsePrimary());
    }
    ASSIGN_OR_RETURN(expr, ParsePostfix(std::move(expr)));
    if (with_filters) {
      ASSIGN_OR_RETURN(expr, ParseFilters(std::move(expr)));
    }
    return expr;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& token = Peek();
    const int line = token.line;
    switch (token.kind) {
      case Tok::kName: {
        const std::string& name = Next().text;
        auto expr = std::make_unique<Expr>(Expr{Expr::Kind::kLiteral, line});
        if (name == "true" || name == "True") {
          expr->literal = Value(true);
        } else if (name == "false" || name == "False") {
          expr->literal = Value(false);
        } else if (name == "none" || name == "None") {
          expr->literal = Value::None();
        } else {
          expr->kind = Expr::Kind::kName;
          expr->name = name;
        }
        return expr;
      }
      case Tok::kString: {
        std::string value;
        while (Peek().kind == Tok::kString) value += Next().text;
        auto expr = std::make_unique<Expr>(Expr{Expr::Kind::kLiteral, line});
        expr->literal = Value(std::move(value));
        return expr;
      }
      case Tok::kInt:
      case Tok::kFloat: {
        const Token& number = Next();
        auto expr = std::make_unique<Expr>(Expr{Expr::Kind::kLiteral, line});
        expr->literal =
            number.kind == Tok::kInt ? Value(number.int_value) : Value(number.float_value);
        return expr;
      }
      case Tok::kOp:
        if (SkipOp("(")) {
          if (SkipOp(")")) return std::make_unique<Expr>(Expr{Expr::Kind::kList, line});
          ASSIGN_OR_RETURN(ExprPtr inner, ParseExpression(true));
          if (IsOp(",")) {
            auto tuple = std::make_unique<Expr>(Expr{Expr::Kind::kList, line});
            tuple->args.push_back(std::move(inner));
            while (SkipOp(",") && !IsOp(")")) {
              ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
              tuple->args.push_back(std::move(item));
            }
            inner = std::move(tuple);
          }
          RETURN_IF_ERROR(ExpectOp(")"));
          return inner;
        }
        if (SkipOp("[")) {
          auto list = std::make_unique<Expr>(Expr{Expr::Kind::kList, line});
          while (!IsOp("]")) {
            ASSIGN_OR_RETURN(ExprPtr item, ParseExpression(true));
            list->args.push_back(std::move(item));
            if (!SkipOp(",")) break;
          }
          RETURN_IF_ERROR(ExpectOp("]"));
          return list;
        }
        if (SkipOp("{")) {
          auto dict = std::make_unique<Expr>(Expr{Expr::Kind::kDict, line});
          while (!IsOp("}")) {
            ASSIGN_OR_RETURN(ExprPtr key, ParseExpression(true));
            RETURN_IF_ERROR(ExpectOp(":"));
            ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
            dict->args.push_back(std::move(key));
            dict->args.push_back(std::move(value));
            if (!SkipOp(",")) break;
          }
          RETURN_IF_ERROR(ExpectOp("}"));
          return dict;
        }
        break;
      default:
        break;
    }
    return Unexpected("an expression");
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr expr) {
    while (true) {
      const int line = Peek().line;
      if (SkipOp(".")) {
        if (Peek().kind == Tok::kInt) {
          auto index = std::make_unique<Expr>(Expr{Expr::Kind::kLiteral, line});
          index->literal = Value(Next().int_value);
          expr = Binary(Expr::Kind::kGetItem, line, "", std::move(expr), std::move(index));
          continue;
        }
        ASSIGN_OR_RETURN(std::string attribute, ExpectName());
        auto get = std::make_unique<Expr>(Expr{Expr::Kind::kGetAttr, line});
        get->name = std::move(attribute);
        get->args.push_back(std::move(expr));
        expr = std::move(get);
      } else if (SkipOp("[")) {
        ASSIGN_OR_RETURN(expr, ParseSubscript(std::move(expr), line));
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(expr, ParseCall(std::move(expr)));
      } else {
        return expr;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseSubscript(ExprPtr object, int line) {
    ExprPtr start;
    if (!IsOp(":")) {
      ASSIGN_OR_RETURN(start, ParseExpression(true));
      if (SkipOp("]")) {
        return Binary(Expr::Kind::kGetItem, line, "", std::move(object), std::move(start));
      }
    }
    RETURN_IF_ERROR(ExpectOp(":"));
    auto slice = std::make_unique<Expr>(Expr{Expr::Kind::kSlice, line});
    slice->args.push_back(std::move(object));
    slice->args.push_back(std::move(start));
    ExprPtr stop;
    ExprPtr step;
    if (!IsOp(":") && !IsOp("]")) {
      ASSIGN_OR_RETURN(stop, ParseExpression(true));
    }
    if (SkipOp(":") && !IsOp("]")) {
      ASSIGN_OR_RETURN(step, ParseExpression(true));
    }
    RETURN_IF_ERROR(ExpectOp("]"));
    slice->args.push_back(std::move(stop));
    slice->args.push_back(std::move(step));
    return slice;
  }

  // Parses `(args)` after `callee` (or, with a null callee, into `target`'s arguments).
  absl::Status ParseArguments(Expr* target) {
    RETURN_IF_ERROR(ExpectOp("("));
    while (!IsOp(")")) {
      if (Peek().kind == Tok::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        Next();
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        target->kwargs.emplace_back(std::move(name), std::move(value));
      } else {
        if (!target->kwargs.empty()) {
          return SyntaxError(Peek().line, "positional argument after keyword argument");
        }
        ASSIGN_OR_RETURN(ExprPtr value, ParseExpression(true));
        target->args.push_back(std::move(value));
      }
      if (!SkipOp(",")) break;
    }
    return ExpectOp(")");
  }

  absl::StatusOr<ExprPtr> ParseCall(ExprPtr callee) {
    auto call = std::make_unique<Expr>(Expr{Expr::Kind::kCall, Peek().line});
    call->args.push_back(std::move(callee));
    RETURN_IF_ERROR(ParseArguments(call.get()));
    return call;
  }

  absl::StatusOr<ExprPtr> ParseFilters(ExprPtr expr) {
    while (true) {
      const int line = Peek().line;
      if (SkipOp("|")) {
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        if (!KnownFilters().contains(name)) {
          return SyntaxError(line, absl::StrCat("unknown filter '", name, "'"));
        }
        auto filter = std::make_unique<Expr>(Expr{Expr::Kind::kFilter, line});
        filter->name = std::move(name);
        filter->args.push_back(std::move(expr));
        if (IsOp("(")) RETURN_IF_ERROR(ParseArguments(filter.get()));
        expr = std::move(filter);
      } else if (SkipName("is")) {
        auto test = std::make_unique<Expr>(Expr{Expr::Kind::kTest, line});
        test->negated = SkipName("not");
        if (Peek().kind == Tok::kName) {
          test->name = Next().text;
        } else if (Peek().kind == Tok::kOp) {
          test->name = Next().text;
        } else {
          return Unexpected("a test name");
        }
        if (!KnownTests().contains(test->name)) {
          return SyntaxError(line, absl::StrCat("unknown test '", test->name, "'"));
        }
        test->args.push_back(std::move(expr));
        if (IsOp("(")) {
          RETURN_IF_ERROR(ParseArguments(test.get()));
        } else if (StartsTestArgument()) {
          ASSIGN_OR_RETURN(ExprPtr argument, ParseUnary(false));
          test->args.push_back(std::move(argument));
        }
        expr = std::move(test);
      } else if (IsOp("(")) {
        ASSIGN_OR_RETURN(expr, ParseCall(std::move(expr)));
      } else {
        return expr;
      }
    }
  }

  // Whether the next token begins the single argument of a test (`x is divisibleby 3`).
  bool StartsTestArgument() const {
    const Token& token = Peek();
    if (token.kind == Tok::kName) {
      static const auto* const keywords =
          new absl::flat_hash_set<std::string>{"and", "or", "else", "if", "in", "is", "not"};
      return !keywords->contains(token.text);
    }
    return token.kind == Tok::kString || token.kind == Tok::kInt || token.kind == Tok::kFloat ||
           IsOp("[") || IsOp("{");
  }

  static ExprPtr Binary(Expr::Kind kind, int line, std::string op, ExprPtr left, ExprPtr right) {
    auto expr = std::make_unique<Expr>(Expr{kind, line});
    expr->name = std::move(op);
    expr->args.push_back(std::move(left));
    expr->args.push_back(std::move(right));
    return expr;
  }

  std::vector<Token> tokens_;
  const TemplateOptions& options_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<Body> ParseTemplate(std::string_view source, const TemplateOptions& options) {
  Lexer lexer(source, options);
  ASSIGN_OR_RETURN(std::vector<Token> tokens, lexer.Run());
  Parser parser(std::move(tokens), options);
  return parser.ParseTemplate();
}

}  // namespace ringserve::text::jinja
