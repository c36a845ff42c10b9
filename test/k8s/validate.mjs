// Validates every object of rendered manifests (YAML files, or stdin) against the Kubernetes
// OpenAPI schemas that kubernetes-models carries (and KEDA's for ScaledObject). An object whose
// apiVersion and kind have no schema fails: nothing is let through unchecked.
// Usage: node validate.mjs [FILE...]; prints "ok KIND NAME" or "invalid KIND NAME: why".
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

const modules = {
  'keda.sh/v1alpha1': '@kubernetes-models/keda/keda.sh/v1alpha1',
};
const moduleOf = (apiVersion) => modules[apiVersion] ?? `kubernetes-models/${apiVersion}`;

async function check(obj) {
  const what = `${obj?.kind} ${obj?.metadata?.name}`;
  let mod;
  try {
    mod = await import(moduleOf(obj.apiVersion));
  } catch {
    return `invalid ${what}: no schema for apiVersion ${obj.apiVersion}`;
  }
  const Model = mod[obj.kind];
  if (typeof Model !== 'function') return `invalid ${what}: no schema for ${obj.apiVersion} ${obj.kind}`;
  // kustomize folds long base64 values over lines; the API server's decoder (Go's base64)
  // skips line breaks, so the schema's "byte" format is checked on the value without them.
  if (obj.kind === 'Secret' && obj.data) {
    obj = { ...obj, data: Object.fromEntries(Object.entries(obj.data).map(([k, v]) =>
      [k, typeof v === 'string' ? v.replace(/[\r\n]/g, '') : v])) };
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    return `invalid ${what}: ${e.message}`;
  }
  return `ok ${what}`;
}

const inputs = process.argv.length > 2 ? process.argv.slice(2) : ['/dev/stdin'];
let bad = 0, n = 0;
for (const file of inputs) {
  for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
    if (doc.errors.length) { console.log(`invalid ${file}: ${doc.errors[0].message}`); bad++; continue; }
    const obj = doc.toJS();
    if (obj == null) continue;
    const line = await check(obj);
    console.log(line);
    n++;
    if (!line.startsWith('ok ')) bad++;
  }
}
if (n === 0) { console.log('invalid: no objects'); bad++; }
process.exit(bad ? 1 : 0);
