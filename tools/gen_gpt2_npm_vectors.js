// Writes tests/data/tokenizers/gpt2_npm_vectors.json: GPT-2 ids from the npm package gpt-3-encoder (1.1.4)
// for the first 20,000 bytes of tiny Shakespeare plus a mixed-Unicode paragraph, to compare id-for-id.
// Usage: (cd /tmp/gpt3enc && npm init -y && npm install gpt-3-encoder)
//        NODE_PATH=/tmp/gpt3enc/node_modules node tools/gen_gpt2_npm_vectors.js \
//          /work/shared/data/text/tinyshakespeare/input.txt tests/data/tokenizers/gpt2_npm_vectors.json
const fs = require('fs');
const { encode, decode } = require('gpt-3-encoder');

const [shakespearePath, outPath] = process.argv.slice(2);
const shakespeare = fs.readFileSync(shakespearePath).subarray(0, 20000).toString('utf-8');
// Avoids U+FEFF and U+0085, where JavaScript's \s differs from the Oniguruma/Rust \s the HF tokenizers use.
const unicode =
  "Ünïcödé test: naïve café, façade, Straße, Ærøskøbing. Привет, мир! Γειά σου Κόσμε. " +
  "こんにちは世界。你好，世界！안녕하세요 세계. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया। " +
  "Emoji: 🦙🚀😁👍🏽 👨‍👩‍👧 ✅ ❤️. Numbers: 3.14159, 1,000,000, ١٢٣ ⅓ ² ½. Math: ∑∫√∞≈≠ ≤ ≥. " +
  "Tabs\tand\u00a0nbsp\u2003em-space, mixed   spacing  \n\n  indented\n\tline. Quotes: “smart” ‘single’ «guillemets». " +
  "Contractions: it's, I'm, you're, we've, they'll, he'd, DON'T, O'Neil's. Combining: e\u0301 a\u0308 (NFD).\n";
const texts = [shakespeare, unicode];
const cases = texts.map(text => {
  const ids = encode(text);
  if (decode(ids) !== text) throw new Error('npm gpt-3-encoder does not round-trip a test text');
  return { text, ids };
});
const out = {
  generator: 'tools/gen_gpt2_npm_vectors.js with npm gpt-3-encoder@' + require('gpt-3-encoder/package.json').version,
  cases,
};
fs.writeFileSync(outPath, JSON.stringify(out) + '\n');
console.log(cases.map(c => c.ids.length));
