// The official AsyncAPI parser's verdict on a document: every diagnostic on stdout, then exit 1
// when it has an error (severity 0) or the document does not parse. Relative payload $refs are
// resolved from the document's own path.
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

const source = resolve(process.argv[2] ?? 'schemas/asyncapi.json');
const { document, diagnostics } = await new Parser().parse(readFileSync(source, 'utf8'), { source });
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  console.log(`${['error', 'warning', 'info', 'hint'][d.severity]} ${d.code}: ${d.message} at /${d.path.join('/')}`);
}
console.log(document && errors.length === 0 ? `ok: ${source}` : `invalid: ${source}`);
process.exit(document && errors.length === 0 ? 0 : 1);
