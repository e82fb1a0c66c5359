// Lists the ISA-independent native sources (Node-API bindings, dispatch, thread pool).
import { readdirSync } from 'node:fs';
const dir = 'native/src';
console.log(readdirSync(dir).filter((f) => f.endsWith('.c')).sort().map((f) => `${dir}/${f}`).join(' '));
