/**
 * Translates the Oniguruma (Ruby syntax) regular expressions found in Hugging Face
 * tokenizer.json files into equivalent JavaScript `u`-mode regular expressions.
 *
 * Handled: scoped and leading case-insensitive groups `(?i:...)` / `(?i)` (Node 20 has no
 * inline modifiers), possessive quantifiers `?+ *+ ++` and atomic groups `(?>...)` (emulated
 * with a lookahead and a named back-reference), Ruby's nested `{n,m}+`, `{,n}`, identity escapes
 * that `u` mode rejects (`\'`, `\"`, ...), `\x{HHHH}`, `\p{^X}`, `\A \z \Z`, Ruby's line
 * anchors `^ $`, Ruby's `.` (anything but `\n`), and Oniguruma's Unicode `\s`.
 * Capturing groups become non-capturing (splitting only uses whole matches).
 * Back-references, other inline options, nested classes and POSIX brackets are rejected.
 */
import { DsvError } from '../../errors.js';

/** Unicode White_Space, as Oniguruma's `\s` matches it (JS's `\s` adds U+FEFF, lacks U+0085). */
const SPACE_CLASS_BODY = '\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const SYNTAX_CHARS = new Set('^$\\.*+?()[]{}|/'.split(''));

interface Frame {
  start: number; // index in `out` where the group's text starts
  atomic: boolean;
  ci: boolean; // case-insensitivity in force outside this group (restored on close)
}

/**
 * Compiles an Oniguruma pattern to a global, unicode JS RegExp. `where` names the field in
 * error messages (e.g. `pre_tokenizer.pretokenizers[0].pattern.Regex`).
 */
export function compileOnigRegex(pattern: string, where: string): RegExp {
  const source = translateOnig(pattern, where);
  try {
    return new RegExp(source, 'gu');
  } catch (e) {
    throw new DsvError(`${where}: regex ${JSON.stringify(pattern)} could not be compiled (as ${JSON.stringify(source)}): ${(e as Error).message}`);
  }
}

/** Returns the JS regex source equivalent to an Oniguruma pattern (see module doc). */
export function translateOnig(pattern: string, where: string): string {
  function fail(msg: string): never {
    throw new DsvError(`${where}: unsupported regex ${JSON.stringify(pattern)}: ${msg}`);
  }
  const out: string[] = [];
  const stack: Frame[] = [];
  let atomStart = -1; // index in `out` of the last quantifiable atom, -1 if none
  let ci = false;
  let atomicCount = 0;
  const cps = Array.from(pattern);
  let i = 0;

  const wrapAtomic = (start: number, body: string): void => {
    const name = `a${atomicCount++}`;
    out.length = start;
    out.push(`(?=(?<${name}>${body}))\\k<${name}>`);
  };

  const readHex = (count: number): string => {
    const hex = cps.slice(i, i + count).join('');
    if (!new RegExp(`^[0-9a-fA-F]{${count}}$`).test(hex)) fail(`bad hexadecimal escape near "${hex}"`);
    i += count;
    return hex;
  };

  const readEscape = (inClass: boolean): string => {
    // cps[i] === '\\'
    const c = cps[i + 1];
    if (c === undefined) fail('trailing backslash');
    i += 2;
    switch (c) {
      case 's':
        return inClass ? SPACE_CLASS_BODY : `[${SPACE_CLASS_BODY}]`;
      case 'S':
        return inClass ? '\\S' : `[^${SPACE_CLASS_BODY}]`;
      case 'p':
      case 'P': {
        if (cps[i] !== '{') fail(`\\${c} must be followed by {...}`);
        const close = cps.indexOf('}', i);
        if (close < 0) fail(`unterminated \\${c}{`);
        let name = cps.slice(i + 1, close).join('');
        i = close + 1;
        let neg = c === 'P';
        if (name.startsWith('^')) {
          neg = !neg;
          name = name.slice(1);
        }
        return `\\${neg ? 'P' : 'p'}{${name}}`;
      }
      case 'x': {
        if (cps[i] === '{') {
          const close = cps.indexOf('}', i);
          if (close < 0) fail('unterminated \\x{');
          const hex = cps.slice(i + 1, close).join('');
          i = close + 1;
          return `\\u{${hex}}`;
        }
        return `\\u{${readHex(2)}}`;
      }
      case 'u':
        return `\\u{${readHex(4)}}`;
      case 'c': {
        const ctl = cps[i];
        if (ctl === undefined || !/[A-Za-z]/.test(ctl)) fail('\\c must be followed by a letter');
        i++;
        return `\\c${ctl}`;
      }
      case '0': {
        const oct = /^[0-7]{0,2}/.exec(cps.slice(i, i + 2).join(''))![0];
        i += oct.length;
        return `\\u{${parseInt(oct || '0', 8).toString(16)}}`;
      }
      case 'A':
        return inClass ? fail('\\A inside a character class') : '(?<![\\s\\S])';
      case 'z':
        return inClass ? fail('\\z inside a character class') : '(?![\\s\\S])';
      case 'Z':
        return inClass ? fail('\\Z inside a character class') : '(?=\\n?(?![\\s\\S]))';
      case 'h':
        return inClass ? '0-9a-fA-F' : '[0-9a-fA-F]';
      case 'H':
        return inClass ? fail('\\H inside a character class') : '[^0-9a-fA-F]';
      case 'G':
      case 'K':
      case 'R':
      case 'X':
      case 'k':
      case 'g':
        return fail(`\\${c} has no JavaScript equivalent`);
      default:
        break;
    }
    if (/[1-9]/.test(c)) fail('back-references are not supported');
    if (/[A-Za-z0-9]/.test(c)) return `\\${c}`; // \d \w \b \n \t \f \v ...: same meaning
    if (SYNTAX_CHARS.has(c) || (inClass && c === '-')) return `\\${c}`;
    return c; // an identity escape of a plain character: the character itself
  };

  const caseFold = (ch: string): string => {
    const lo = ch.toLowerCase();
    const up = ch.toUpperCase();
    if (lo === up || Array.from(lo).length !== 1 || Array.from(up).length !== 1) return ch;
    return lo === ch ? `${lo}${up}` : `${up}${lo}`;
  };

  const readClass = (): string => {
    // cps[i] === '['
    i++;
    let body = '';
    let negate = false;
    if (cps[i] === '^') {
      negate = true;
      i++;
    }
    let first = true;
    for (;;) {
      const c = cps[i];
      if (c === undefined) fail('unterminated character class');
      if (c === ']' && !first) {
        i++;
        break;
      }
      first = false;
      if (c === '[') fail(cps[i + 1] === ':' ? 'POSIX bracket classes' : 'nested character classes');
      if (c === '&' && cps[i + 1] === '&') fail('class intersection (&&)');
      if (c === '\\') {
        body += readEscape(true);
        continue;
      }
      i++;
      if (c === ']') body += '\\]';
      else if (ci && cps[i] === '-' && cps[i + 1] !== undefined && cps[i + 1] !== ']') {
        // a range under (?i): add the other-case range when both ends are ASCII letters
        const hi = cps[i + 1]!;
        i += 2;
        body += `${c}-${hi}`;
        if (/^[a-z]$/.test(c) && /^[a-z]$/.test(hi)) body += `${c.toUpperCase()}-${hi.toUpperCase()}`;
        else if (/^[A-Z]$/.test(c) && /^[A-Z]$/.test(hi)) body += `${c.toLowerCase()}-${hi.toLowerCase()}`;
      } else body += ci ? caseFold(c) : c;
    }
    return `[${negate ? '^' : ''}${body}]`;
  };

  while (i < cps.length) {
    const c = cps[i]!;
    if (c === '\\') {
      atomStart = out.length;
      out.push(readEscape(false));
      continue;
    } else if (c === '[') {
      atomStart = out.length;
      out.push(readClass());
      continue;
    } else if (c === '(') {
      i++;
      if (cps[i] === '?') {
        const kind = cps[i + 1];
        if (kind === ':' || kind === '=' || kind === '!') {
          stack.push({ start: out.length, atomic: false, ci });
          out.push(`(?${kind}`);
          i += 2;
        } else if (kind === '>') {
          stack.push({ start: out.length, atomic: true, ci });
          out.push('(?:');
          i += 2;
        } else if (kind === '<' && (cps[i + 2] === '=' || cps[i + 2] === '!')) {
          stack.push({ start: out.length, atomic: false, ci });
          out.push(`(?<${cps[i + 2]}`);
          i += 3;
        } else if (kind === '<' || kind === "'") {
          const close = cps.indexOf(kind === '<' ? '>' : "'", i + 2);
          if (close < 0) fail('unterminated group name');
          stack.push({ start: out.length, atomic: false, ci });
          out.push('(?:');
          i = close + 1;
        } else if (kind === '#') {
          const close = cps.indexOf(')', i);
          if (close < 0) fail('unterminated comment');
          i = close + 1;
          continue;
        } else {
          // inline options: (?i) or (?i:...) ; (?-i...) turns it off
          let j = i + 1;
          let on = true;
          let newCi: boolean = ci;
          while (j < cps.length && cps[j] !== ')' && cps[j] !== ':') {
            const o = cps[j];
            if (o === '-') on = false;
            else if (o === 'i') newCi = on;
            else fail(`inline option "${o}" (only "i" is supported)`);
            j++;
          }
          if (j >= cps.length) fail('unterminated group');
          if (cps[j] === ')') {
            ci = newCi; // applies to the rest of the enclosing group
            i = j + 1;
            continue;
          }
          stack.push({ start: out.length, atomic: false, ci });
          out.push('(?:');
          ci = newCi;
          i = j + 1;
        }
      } else {
        stack.push({ start: out.length, atomic: false, ci });
        out.push('(?:');
      }
      atomStart = -1;
      continue;
    } else if (c === ')') {
      const frame = stack.pop();
      if (!frame) fail('unbalanced ")"');
      out.push(')');
      ci = frame!.ci;
      if (frame!.atomic) wrapAtomic(frame!.start, out.slice(frame!.start).join(''));
      atomStart = frame!.start;
    } else if (c === '|') {
      out.push('|');
      atomStart = -1;
    } else if (c === '*' || c === '+' || c === '?' || c === '{') {
      let q = c;
      if (c === '{') {
        const m = /^\{(\d*)(,?)(\d*)\}/.exec(cps.slice(i).join(''));
        if (!m || (m[1] === '' && m[3] === '')) {
          // not a quantifier: a literal brace
          atomStart = out.length;
          out.push('\\{');
          i++;
          continue;
        }
        q = `{${m[1] === '' ? '0' : m[1]}${m[2]}${m[3]}}`;
        i += m[0].length - 1;
      }
      if (atomStart < 0) fail(`quantifier "${q}" with nothing to repeat`);
      i++;
      const atom = out.slice(atomStart).join('');
      const next = cps[i];
      if (next === '?') {
        out.length = atomStart;
        out.push(`${atom}${q}?`);
        i++;
      } else if (next === '+' && c !== '{') {
        wrapAtomic(atomStart, `${atom}${q}`); // possessive
        i++;
      } else if (next === '+') {
        out.length = atomStart;
        out.push(`(?:${atom}${q})+`); // Ruby: {n,m}+ repeats the repetition
        i++;
      } else {
        out.length = atomStart;
        out.push(`${atom}${q}`);
      }
      atomStart = -1;
      continue;
    } else if (c === '.') {
      atomStart = out.length;
      out.push('[^\\n]');
    } else if (c === '^') {
      out.push('(?<![^\\n])');
      atomStart = -1;
    } else if (c === '$') {
      out.push('(?![^\\n])');
      atomStart = -1;
    } else {
      atomStart = out.length;
      if (ci) {
        const folded = caseFold(c);
        out.push(folded === c ? escapeLiteral(c) : `[${folded}]`);
      } else out.push(escapeLiteral(c));
    }
    i++;
  }
  if (stack.length > 0) fail('unbalanced "("');
  return out.join('');
}

function escapeLiteral(c: string): string {
  return c === ']' || c === '}' || c === '/' ? `\\${c}` : c;
}
