// Renders a chat template with @huggingface/jinja (an independent, pure-JS Jinja) for the
// ringserve_text cross-check.
//   node render.mjs TOKENIZER_CONFIG_JSON CASES_FILE
// CASES_FILE is a JSON list of contexts ({messages, tools, add_generation_prompt, ...}). For each,
// prints one JSON line: {"text": "<rendered>"} or {"error": "<message>"}.
import { readFileSync } from "node:fs";
import { Template } from "@huggingface/jinja";

const [configPath, casesPath] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, "utf8"));
const template = new Template(config.chat_template);
const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const out = [];
for (const context of cases) {
  try {
    out.push(JSON.stringify({ text: template.render(context) }));
  } catch (error) {
    out.push(JSON.stringify({ error: String(error.message ?? error) }));
  }
}
process.stdout.write(out.join("\n") + "\n");
