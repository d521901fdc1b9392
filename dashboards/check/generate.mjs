// Writes generated/<dashboard>.ts for every ../*.json: the dashboard as a typed object
// literal, and each panel again as a literal typed by its panel type. `tsc --noEmit`
// then checks them (see types.ts). Run through `npm run check`.
import { readFileSync, readdirSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dashboards = join(here, '..');
const out = join(here, 'generated');
const types = ['timeseries', 'stat', 'bargauge', 'table', 'nodegraph'];

rmSync(out, { recursive: true, force: true });
mkdirSync(out);
const files = readdirSync(dashboards).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) {
  throw new Error(`no dashboards in ${dashboards}`);
}
let failed = false;
for (const file of files) {
  const json = JSON.parse(readFileSync(join(dashboards, file), 'utf8'));
  const lines = [
    `// Generated from dashboards/${file} by generate.mjs: do not edit.`,
    `import type { CheckedDashboard, CheckedPanel, CheckedRow } from '../types';`,
    '',
    `export const dashboard: CheckedDashboard = ${JSON.stringify(json, null, 2)};`,
  ];
  const panels = (json.panels ?? []).flatMap((p) => (p.type === 'row' ? [p, ...(p.panels ?? [])] : [p]));
  panels.forEach((p, i) => {
    if (p.type === 'row') {
      lines.push('', `export const panel${i}: CheckedRow = ${JSON.stringify(p, null, 2)};`);
    } else if (types.includes(p.type)) {
      lines.push('', `export const panel${i}: CheckedPanel<'${p.type}'> = ${JSON.stringify(p, null, 2)};`);
    } else {
      console.error(`${file}: panel "${p.title}" has type ${p.type}, which types.ts does not know: add it there`);
      failed = true;
    }
  });
  writeFileSync(join(out, basename(file, '.json') + '.ts'), lines.join('\n') + '\n');
}
if (failed) {
  process.exit(1);
}
console.log(`generated checks for ${files.length} dashboards`);
