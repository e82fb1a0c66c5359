// Lists the per-ISA kernel sources for binding.gyp: every native/src/isa/*.c is compiled
// three times (AVX-512, AVX2, scalar), each copy with its own -m flags and name suffix.
import { readdirSync } from 'node:fs';
const dir = 'native/src/isa';
console.log(readdirSync(dir).filter((f) => f.endsWith('.c')).sort().map((f) => `${dir}/${f}`).join(' '));
