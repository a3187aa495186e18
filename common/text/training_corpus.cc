#include "common/text/training_corpus.h"

#include <fstream>
#include <sstream>

namespace ringserve::text {

const std::string_view kEmbeddedTrainingText = R"corpus(
The serving system accepts a prompt, turns it into tokens, and streams the answer back one
piece at a time. A router in front of the workers decides where each request goes: the prefill
worker reads the whole prompt once, and the decode worker produces the following tokens. When a
worker is lost, the request is moved to another one and the stream continues where it stopped.

Yesterday it rained in the morning, but by noon the sky had cleared and the streets were dry
again. We walked along the river, counted 17 boats, and stopped for coffee at a small cafe near
the bridge. The waiter said they open at 7:30 and close at 22:00, except on Sundays.

To make bread, mix 500 g of flour, 350 ml of water, 10 g of salt and 5 g of yeast. Knead for ten
minutes, let the dough rest for two hours, shape it, and bake at 230 degrees for 35 minutes.
Don't open the oven too early; it's the steam that gives the crust its shine. They'll ask for
the recipe, so we've written it down. I'm sure you're going to like it.

Questions? Answers! Lists: first, second, third. Quotes: "double" and 'single'. Brackets: (a),
[b], {c}, <d>. Symbols: @user #tag $5.00 50% a&b x*y a+b=c a-b a/b a|b a\b ~home ^up `code`.
Dates: 2024-01-15, 1999/12/31, 03.04.2025. Times: 09:15:30. Numbers: 0 1 2 3 4 5 6 7 8 9 10 42
100 256 1024 65536 3.14159 2.71828 -7 +12 1e-5 6.02e23 0x1F 0b1010.

    Indented text keeps its leading spaces.
	A tab starts this line.
Trailing spaces here.   
Several blank lines follow.



End of the whitespace section.

```cpp
#include <vector>

// Returns the sum of the values.
int Sum(const std::vector<int>& values) {
  int total = 0;
  for (int v : values) total += v;
  return total;
}

class Counter {
 public:
  void Add(int n) { count_ += n; }
  int count() const { return count_; }

 private:
  int count_ = 0;
};
```

```python
def fibonacci(n: int) -> list[int]:
    """Returns the first n Fibonacci numbers."""
    result = [0, 1]
    while len(result) < n:
        result.append(result[-1] + result[-2])
    return result[:n]


if __name__ == "__main__":
    print(fibonacci(10))
```

```json
{"name": "get_weather", "arguments": {"city": "Berlin", "unit": "celsius", "days": 3}}
{"role": "user", "content": "What is the weather like today?", "tool_calls": []}
```

```bash
$ cmake -S . -B build && cmake --build build -j8
$ ./build/bin/ringctl generate --prompt "Hello, world!" --max-tokens 32
```

中文：今天天气很好，我们去公园散步吧。机器学习模型需要大量的数据和计算资源。
日本語：今日はいい天気ですね。東京は日本の首都です。ひらがなとカタカナと漢字。
한국어: 안녕하세요. 오늘 날씨가 정말 좋네요. 서울은 한국의 수도입니다.
Русский: Быстрая коричневая лиса перепрыгивает через ленивую собаку.
Ελληνικά: Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.
Français : Où est la bibliothèque ? Les élèves étudient à l'école depuis déjà trois ans.
Deutsch: Größe, Straße, Äpfel und Übermut. Fußgänger überqueren die Brücke.
Español: ¿Dónde está la estación? ¡Qué día tan bonito! El niño comió piñas.
العربية: مرحبا بالعالم. हिन्दी: नमस्ते दुनिया। עברית: שלום עולם.
Combining marks: é ñ ö å (decomposed) and é ñ ö å (precomposed); Vietnamese: Tiếng Việt có dấu.
Emoji: 😀 😃 😄 🚀 🌍 🎉 👍🏽 ❤️ 👨‍👩‍👧 🇩🇪 🇯🇵 ✨ 🔥 💡 ✅ ❌
Math: ∑ ∫ √ ∞ ≈ ≠ ≤ ≥ ± × ÷ π θ λ μ Ω → ← ↔ ∀ ∃ ∈ ∉ ⊂ ∪ ∩.
Currency: € £ ¥ ₹ ₩ ₽ ¢. Typography: “quotes” ‘single’ — dash – en dash … ellipsis • bullet.

<role>SYSTEM</role>detailed thinking off<|role_end|><role>HUMAN</role>Can you add 2 and 3?<|role_end|>
<role>ASSISTANT</role>
<think>
The user wants the sum of two small numbers. 2 + 3 = 5.
</think>

The answer is 5.<|role_end|>
<tool_call>
{"name": "calculator", "arguments": {"expression": "2 + 3"}}
</tool_call>
<tool_response>
{"result": 5}
</tool_response>

THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG. the quick brown fox jumps over the lazy dog.
She said: "It's done." He replied: "We'll see; they've said that before, and you'd agree."
)corpus";

std::string DefaultTrainingCorpus() {
  std::string corpus(kEmbeddedTrainingText);
  std::ifstream license("/usr/share/common-licenses/GPL-3", std::ios::binary);
  if (license) {
    std::ostringstream text;
    text << license.rdbuf();
    corpus.append(text.str());
  }
  return corpus;
}

}  // namespace ringserve::text
