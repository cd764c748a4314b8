// Encodes every text file of a directory with the npm package gpt-3-encoder's own JavaScript
// encoder, so the C++ tokenizer can be checked against it id for id (tests/unit/test_tokenizer.cpp).
//
//   node gpt2_reference_ids.mjs <gpt-3-encoder package dir> <text dir> <output dir>
//
// Files are read as UTF-8 (invalid bytes become U+FFFD, as node decodes them), in byte order of
// their names, each encoded on its own. Output, in <output dir>:
//   gpt2_ids.u16   every file's ids one after another, as little-endian uint16 (GPT-2's 50257 ids fit)
//   gpt2_ids.tsv   one line per file: name <TAB> offset (in ids) <TAB> count
//   MANIFEST       key=value lines: encoder, files, tokens, fnv1a64 (FNV-1a 64 over gpt2_ids.u16's
//                  bytes, in hex), written last, so its presence means the rest is complete.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [encoderDir, textDir, outDir] = process.argv.slice(2);
if (!encoderDir || !textDir || !outDir) {
  console.error('usage: node gpt2_reference_ids.mjs <gpt-3-encoder dir> <text dir> <output dir>');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const { encode } = require(path.resolve(encoderDir, 'Encoder.js'));
const version = JSON.parse(fs.readFileSync(path.join(encoderDir, 'package.json'), 'utf-8')).version;

const names = fs.readdirSync(textDir).filter((n) => !n.startsWith('.')).sort();
fs.mkdirSync(outDir, { recursive: true });
fs.rmSync(path.join(outDir, 'MANIFEST'), { force: true });

const chunks = [];
const index = [];
let offset = 0;
for (const name of names) {
  const ids = encode(fs.readFileSync(path.join(textDir, name), 'utf-8'));
  const out = new Uint16Array(ids.length);
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new Error(`${name}: id ${id} at ${i}`);
    out[i] = id;
  });
  chunks.push(Buffer.from(out.buffer));  // little-endian on every machine node runs on here
  index.push(`${name}\t${offset}\t${ids.length}`);
  offset += ids.length;
}
const all = Buffer.concat(chunks);

let hash = 0xcbf29ce484222325n;
for (const byte of all) hash = BigInt.asUintN(64, (hash ^ BigInt(byte)) * 0x100000001b3n);

fs.writeFileSync(path.join(outDir, 'gpt2_ids.u16'), all);
fs.writeFileSync(path.join(outDir, 'gpt2_ids.tsv'), index.join('\n') + '\n');
fs.writeFileSync(path.join(outDir, 'MANIFEST'),
                 `encoder=gpt-3-encoder@${version}\nfiles=${names.length}\ntokens=${offset}\n` +
                     `fnv1a64=${hash.toString(16).padStart(16, '0')}\n`);
console.log(`gpt2_reference_ids: ${names.length} files, ${offset} tokens in ${outDir}`);
