// Parses every ```mermaid block of the given Markdown files with mermaid itself (in jsdom), so a
// picture that would not render fails CI instead of showing an error box in the book.
// Usage: node scripts/check_mermaid.mjs FILE.md...   (mermaid and jsdom from npm on NODE_PATH's tree)
import fs from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import("mermaid");

let pictures = 0;
for (const file of process.argv.slice(2)) {
  const text = fs.readFileSync(file, "utf8");
  for (const match of text.matchAll(/```mermaid\n([\s\S]*?)```/g)) {
    pictures += 1;
    try {
      await mermaid.parse(match[1]);
    } catch (error) {
      console.log(`FAIL ${file}: ${error.message.split("\n").slice(0, 3).join(" ")}`);
      process.exitCode = 1;
    }
  }
}
console.log(`${pictures} mermaid picture(s) parsed`);
