// Encodes text with @huggingface/tokenizers (an independent, pure-JS implementation) for the
// ringserve_text cross-check.
//   node encode.mjs TOKENIZER_DIR INPUT_FILE
// INPUT_FILE holds one JSON string per line. For each, prints one JSON line:
//   {"ids": [...], "decoded": "<decode(ids)>"}
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [dir, input] = process.argv.slice(2);
const tokenizerJson = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const tokenizerConfig = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);

const lines = readFileSync(input, "utf8").split("\n").filter((line) => line.length > 0);
const out = [];
for (const line of lines) {
  const text = JSON.parse(line);
  const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
  const decoded = ids.length > 0 ? tokenizer.decode(ids, { skip_special_tokens: false }) : "";
  out.push(JSON.stringify({ ids, decoded }));
}
process.stdout.write(out.join("\n") + "\n");
