#include "common/text/jinja.h"

#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace ringserve::text::jinja {
namespace {

using ::testing::HasSubstr;

// Renders `source` with `context` (JSON text); failures come back as "ERROR: <message>".
std::string Render(std::string_view source, std::string_view context = "{}",
                   TemplateOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Template>> compiled = Template::Create(source, options);
  if (!compiled.ok()) return absl::StrCat("ERROR: ", compiled.status().message());
  absl::StatusOr<Value> variables = Value::FromJson(nlohmann::ordered_json::parse(context));
  if (!variables.ok()) return absl::StrCat("ERROR: ", variables.status().message());
  absl::StatusOr<std::string> text = (*compiled)->Render(variables->AsDict());
  if (!text.ok()) return absl::StrCat("ERROR: ", text.status().message());
  return *text;
}

TEST(JinjaTest, TextAndExpressions) {
  EXPECT_EQ(Render("Hello {{ name }}!", R"({"name": "world"})"), "Hello world!");
  EXPECT_EQ(Render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }}"),
            "7 9 3 -4 1");
  EXPECT_EQ(Render("{{ 7 / 2 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 10 / 5 }}"), "3.5 1024 2.5 2.0");
  EXPECT_EQ(Render("{{ 'a' ~ 1 ~ none }} {{ 'ab' + 'cd' }} {{ 'x' * 3 }}"), "a1None abcd xxx");
  EXPECT_EQ(Render("{{ true }} {{ false }} {{ none }} {{ [1, 'a', none] }} {{ {'k': 1} }}"),
            "True False None [1, 'a', None] {'k': 1}");
  EXPECT_EQ(Render("{{ undefined_name }}|{{ 'x' if false }}|"), "||");
  EXPECT_EQ(Render(R"({{ "a\nb\t\"q\"\u00e9" }})"), "a\nb\t\"q\"\u00e9");
}

TEST(JinjaTest, ComparisonsAndLogic) {
  EXPECT_EQ(Render("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' == 'a' }} {{ 1 == 1.0 }} {{ 1 != 2 }}"),
            "True False True True True");
  EXPECT_EQ(Render("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}"),
            "True True True True");
  EXPECT_EQ(Render("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ not 0 }} {{ not (1 and 0) }}"),
            "x y True True");
  EXPECT_EQ(Render("{{ 'yes' if 1 > 0 else 'no' }} {{ 'yes' if [] else 'no' }}"), "yes no");
}

TEST(JinjaTest, AttributesSubscriptsAndSlices) {
  const char* context = R"({"m": {"role": "user", "list": [1, 2, 3, 4]}, "s": "héllo"})";
  EXPECT_EQ(Render("{{ m.role }} {{ m['role'] }} {{ m.list[0] }} {{ m.list[-1] }} {{ m.list.1 }}",
                   context),
            "user user 1 4 2");
  EXPECT_EQ(
      Render("{{ m.list[::-1] }} {{ m.list[1:3] }} {{ m.list[:2] }} {{ m.list[::2] }}", context),
      "[4, 3, 2, 1] [2, 3] [1, 2] [1, 3]");
  EXPECT_EQ(Render("{{ s[1] }} {{ s[::-1] }} {{ s|length }} {{ m.missing is defined }}", context),
            "é olléh 5 False");
  EXPECT_THAT(Render("{{ m.missing.deeper }}", context),
              HasSubstr("cannot read attribute 'deeper' of an undefined value ('missing')"));
}

TEST(JinjaTest, IfElifElse) {
  const char* source = "{% if x == 1 %}one{% elif x == 2 %}two{% else %}many{% endif %}";
  EXPECT_EQ(Render(source, R"({"x": 1})"), "one");
  EXPECT_EQ(Render(source, R"({"x": 2})"), "two");
  EXPECT_EQ(Render(source, R"({"x": 5})"), "many");
}

TEST(JinjaTest, ForLoopVariables) {
  EXPECT_EQ(Render("{% for x in xs %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}"
                   "{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}",
                   R"({"xs": ["a", "b"]})"),
            "01TrueFalse2a;12FalseTrue2b;");
  EXPECT_EQ(Render("{% for x in xs if x > 1 %}{{ x }}{{ loop.index }} {% else %}none{% endfor %}",
                   R"({"xs": [1, 2, 3]})"),
            "21 32 ");
  EXPECT_EQ(Render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Render("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}",
                   R"({"d": {"b": 1, "a": 2}})"),
            "b=1,a=2,");
  EXPECT_EQ(Render("{% for x in range(5) %}{% if x == 1 %}{% continue %}{% endif %}"
                   "{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "02");
}

TEST(JinjaTest, SetScopingAndNamespace) {
  // A set inside a loop does not leak; a namespace attribute does.
  EXPECT_EQ(Render("{% set x = 1 %}{% for i in [1, 2] %}{% set x = i * 10 %}{% endfor %}{{ x }}"),
            "1");
  EXPECT_EQ(Render("{% set ns = namespace(x=1, y='a') %}{% for i in [1, 2] %}"
                   "{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}{{ ns.y }}"),
            "4a");
  EXPECT_EQ(Render("{% set a, b = [1, 2] %}{{ a }}{{ b }}"), "12");
  EXPECT_EQ(Render("{% set block %}in {{ 1 + 1 }}{% endset %}[{{ block }}]"), "[in 2]");
  EXPECT_THAT(Render("{% set x = 1 %}{% set x.y = 2 %}"), HasSubstr("not a namespace"));
}

TEST(JinjaTest, Tests) {
  EXPECT_EQ(Render("{{ 'a' is string }} {{ 1 is string }} {{ x is defined }} {{ y is defined }}"
                   " {{ x is none }} {{ y is undefined }} {{ 3 is odd }} {{ 4 is divisibleby 2 }}"
                   " {{ [] is iterable }} {{ {} is mapping }} {{ 1 is not none }}",
                   R"({"x": null})"),
            "True False True False True True True True True True True");
}

TEST(JinjaTest, StringMethods) {
  const char* context = R"({"s": "  <think>\nabc\n</think>\n\nanswer  "})";
  EXPECT_EQ(Render("[{{ s.strip() }}][{{ s.lstrip() }}][{{ s.rstrip() }}]", context),
            "[<think>\nabc\n</think>\n\nanswer][<think>\nabc\n</think>\n\nanswer  ]"
            "[  <think>\nabc\n</think>\n\nanswer]");
  EXPECT_EQ(Render("{{ s.split('</think>')[0].split('<think>')[-1].strip('\\n') }}", context),
            "abc");
  EXPECT_EQ(Render("{{ 'xxhixx'.strip('x') }} {{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }}"),
            "hi ['a', 'b', '', 'c'] ['a', 'b']");
  EXPECT_EQ(Render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith('bc') }} "
                   "{{ 'abc'.startswith(('x', 'a')) }} {{ 'Hi'.upper() }} {{ 'Hi'.lower() }}"),
            "True True True HI hi");
  EXPECT_EQ(Render("{{ 'a-b-c'.replace('-', '+') }} {{ ', '.join(['x', 'y']) }} "
                   "{{ 'a b'.split(' ', 1) }}"),
            "a+b+c x, y ['a', 'b']");
}

TEST(JinjaTest, Filters) {
  EXPECT_EQ(Render("{{ [1, 2]|length }} {{ 'héllo'|length }} {{ {'a': 1}|length }}"), "2 5 1");
  EXPECT_EQ(Render("[{{ '  x  '|trim }}] {{ 'ab'|upper }} {{ x|default('d') }} {{ [3, 4]|first }}"
                   " {{ [3, 4]|last }} {{ [1, 2]|join('-') }} {{ '42'|int + 1 }}"),
            "[x] AB d 3 4 1-2 43");
  EXPECT_EQ(Render("{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='c')|list }}",
                   R"({"msgs": [{"role": "user", "c": 1}, {"role": "bot", "c": 2}]})"),
            "[1]");
}

TEST(JinjaTest, ToJsonMatchesPythonJsonDumps) {
  const char* context =
      R"({"t": {"name": "f", "n": 1, "x": 2.5, "y": 3.0, "ok": true, "none": null,
                "list": [1, "é\n\"q\""], "empty": {}}})";
  EXPECT_EQ(Render("{{ t|tojson }}", context),
            R"({"name": "f", "n": 1, "x": 2.5, "y": 3.0, "ok": true, "none": null, )"
            R"("list": [1, "é\n\"q\""], "empty": {}})");
  EXPECT_EQ(Render("{{ [1, {'a': []}]|tojson(indent=2) }}"), "[\n  1,\n  {\n    \"a\": []\n  }\n]");
  EXPECT_THAT(Render("{{ x|tojson }}"), HasSubstr("not JSON serializable"));
}

TEST(JinjaTest, WhitespaceControl) {
  EXPECT_EQ(Render("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(Render("a\n  {%- if true -%}\n  b\n  {%- endif -%}\n  c"), "abc");
  // trim_blocks and lstrip_blocks, as HuggingFace sets them.
  EXPECT_EQ(Render("{% if true %}\n  x\n  {% endif %}\ny"), "  x\ny");
  EXPECT_EQ(Render("  {%+ if true %}x{% endif %}"), "  x");
  TemplateOptions plain;
  plain.trim_blocks = false;
  plain.lstrip_blocks = false;
  EXPECT_EQ(Render("{% if true %}\n  x\n  {% endif %}\ny", "{}", plain), "\n  x\n  \ny");
  // One trailing newline is dropped, like Jinja2.
  EXPECT_EQ(Render("x\n"), "x");
  EXPECT_EQ(Render("a{# comment #}b {#- trimmed -#} c"), "abc");
  EXPECT_EQ(Render("{% raw %}{{ not evaluated }}{% endraw %}"), "{{ not evaluated }}");
}

TEST(JinjaTest, Macros) {
  EXPECT_EQ(Render("{% macro greet(name, punct='!') %}hi {{ name }}{{ punct }}{% endmacro %}"
                   "{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c') }}"),
            "hi a! hi b? hi c!");
}

TEST(JinjaTest, SyntaxErrorsNameTheLine) {
  EXPECT_THAT(Render("line1\n{% if x %}\nno end"), HasSubstr("line 3"));
  EXPECT_THAT(Render("line1\n{% if x %}\nno end"), HasSubstr("expected 'endif'"));
  EXPECT_THAT(Render("{{ x | nosuchfilter }}"), HasSubstr("unknown filter 'nosuchfilter'"));
  EXPECT_THAT(Render("{{ x is nosuchtest }}"), HasSubstr("unknown test 'nosuchtest'"));
  EXPECT_THAT(Render("\n\n{% frobnicate %}"), HasSubstr("line 3: unknown or misplaced tag"));
  EXPECT_THAT(Render("{{ 1 + }}"), HasSubstr("expected an expression"));
  EXPECT_THAT(Render("{{ 'unterminated }}"), HasSubstr("unterminated string"));
  EXPECT_THAT(Render("{{ x "), HasSubstr("unclosed"));
  EXPECT_THAT(Render("{% endfor %}"), HasSubstr("unknown or misplaced tag 'endfor'"));
  EXPECT_THAT(Render("{% break %}"), HasSubstr("outside a loop"));
  EXPECT_THAT(Render("{# open"), HasSubstr("unclosed comment"));
}

TEST(JinjaTest, RuntimeErrors) {
  EXPECT_THAT(Render("\n{{ raise_exception('bad role') }}"),
              HasSubstr("line 2: raise_exception: bad role"));
  EXPECT_THAT(Render("{{ 'a' + 1 }}"),
              HasSubstr("unsupported operand types for +: 'str' and 'int'"));
  EXPECT_THAT(Render("{{ 1 / 0 }}"), HasSubstr("division by zero"));
  EXPECT_THAT(Render("{{ 'a' < 1 }}"), HasSubstr("'<' not supported"));
  EXPECT_THAT(Render("{{ x.y }}"), HasSubstr("undefined value ('x')"));
  EXPECT_THAT(Render("{% for x in 5 %}{% endfor %}"), HasSubstr("'int' object is not iterable"));
  EXPECT_THAT(Render("{{ 'a'.nosuchmethod() }}"), HasSubstr("has no method 'nosuchmethod'"));
}

TEST(JinjaTest, LimitsStopRunawayTemplates) {
  TemplateOptions options;
  options.max_steps = 10'000;
  EXPECT_THAT(Render("{% for i in range(100000) %}{{ i }}{% endfor %}", "{}", options),
              HasSubstr("exceeds the limit of 10000 steps"));
  options = {};
  options.max_output_bytes = 100;
  EXPECT_THAT(Render("{% for i in range(1000) %}xxxxxxxxxx{% endfor %}", "{}", options),
              HasSubstr("output exceeds the limit of 100 bytes"));
  EXPECT_THAT(Render("{{ 'x' * 1000000000000 }}", "{}", options), HasSubstr("exceeds the limit"));
  EXPECT_THAT(Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
              HasSubstr("macro calls nest deeper than the limit 64"));
  const std::string deep = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  EXPECT_THAT(Render(deep), HasSubstr("deeper than the limit"));
  std::string chain = "{{ 1";
  for (int i = 0; i < 20000; ++i) chain += " + 1";
  EXPECT_THAT(Render(chain + " }}"), HasSubstr("deeper than the limit"));
  std::string attributes = "{{ x";
  for (int i = 0; i < 20000; ++i) attributes += ".a";
  EXPECT_THAT(Render(attributes + " }}"), HasSubstr("deeper than the limit"));
  std::string nested_json = std::string(5000, '[') + std::string(5000, ']');
  EXPECT_THAT(Render("{{ 1 }}", absl::StrCat(R"({"x": )", nested_json, "}")),
              HasSubstr("JSON nests deeper than the limit 512"));
  std::string nested_ifs;
  for (int i = 0; i < 500; ++i) nested_ifs += "{% if true %}";
  EXPECT_THAT(Render(nested_ifs), HasSubstr("deeper than the limit"));
}

TEST(JinjaTest, RandomTemplatesFailCleanly) {
  // Fragments of Jinja glued at random: every result must be a value or a Status.
  const std::vector<std::string> fragments = {"{{",       "}}",
                                              "{%",       "%}",
                                              "{#",       "#}",
                                              "-",        "+",
                                              "if",       "elif",
                                              "else",     "endif",
                                              "for",      "in",
                                              "endfor",   "set",
                                              "=",        "x",
                                              "ns",       "namespace(",
                                              ")",        "(",
                                              "[",        "]",
                                              "{",        "}",
                                              ":",        ",",
                                              ".",        "|",
                                              "length",   "tojson",
                                              "trim",     "is",
                                              "not",      "none",
                                              "defined",  "string",
                                              "'s'",      "\"q\"",
                                              "1",        "-1",
                                              "2.5",      "loop",
                                              "index0",   "messages",
                                              "[::-1]",   "and",
                                              "or",       "~",
                                              "*",        "/",
                                              "//",       "%",
                                              "**",       "==",
                                              "<",        "raise_exception('e')",
                                              "range(3)", "split('a')",
                                              "macro",    "endmacro",
                                              "break",    "continue",
                                              " ",        "\n",
                                              "text",     "raw",
                                              "endraw",   "x.y",
                                              "x[0]",     "'\\u00e9'"};
  std::mt19937 rng(7);
  TemplateOptions options;
  options.max_steps = 100'000;
  options.max_output_bytes = 1 << 16;
  const Value context = *Value::FromJson(nlohmann::ordered_json::parse(
      R"({"x": {"y": [1, 2]}, "messages": [{"role": "user", "content": "hi"}]})"));
  int compiled = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string source;
    const int n = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < n; ++i) source += fragments[rng() % fragments.size()];
    absl::StatusOr<std::unique_ptr<Template>> t = Template::Create(source, options);
    if (!t.ok()) {
      EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << source;
      continue;
    }
    ++compiled;
    absl::StatusOr<std::string> text = (*t)->Render(context.AsDict());
    if (!text.ok()) {
      EXPECT_THAT(text.status().code(), ::testing::AnyOf(absl::StatusCode::kInvalidArgument,
                                                         absl::StatusCode::kResourceExhausted))
          << source;
    }
  }
  EXPECT_GT(compiled, 100);
}

TEST(JinjaTest, PythonFloatRepr) {
  EXPECT_EQ(PythonFloatRepr(1.0), "1.0");
  EXPECT_EQ(PythonFloatRepr(0.1), "0.1");
  EXPECT_EQ(PythonFloatRepr(1e-5), "1e-05");
  EXPECT_EQ(PythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PythonFloatRepr(123456789.125), "123456789.125");
  EXPECT_EQ(PythonFloatRepr(-2.5), "-2.5");
}

}  // namespace
}  // namespace ringserve::text::jinja
