/**
 * Which kernels run: the native addon (default) or the pure-TypeScript reference.
 * DSV3_BACKEND=reference forces the reference; if the addon cannot load, the reference is used
 * after one clear warning. Tests switch with `useBackend` to compare the two.
 */
import type { Kernels } from './kernels.js';
import { referenceKernels } from './reference/index.js';
import { loadNativeKernels, nativeLoadError } from './native.js';

let active: Kernels | null = null;
let warned = false;

function pick(): Kernels {
  if (process.env.DSV3_BACKEND === 'reference') return referenceKernels;
  const native = loadNativeKernels();
  if (native) return native;
  if (!warned) {
    warned = true;
    process.emitWarning(
      `dsv3: the native compute core could not be loaded (${nativeLoadError() ?? 'unknown error'}); ` +
        'using the pure-TypeScript reference kernels, which are much slower. Rebuild with `npm rebuild dsv3`.',
      'DSV3NativeWarning',
    );
  }
  return referenceKernels;
}

/** The active kernels. */
export function kernels(): Kernels {
  return (active ??= pick());
}

/** Selects the backend; returns the previous one. 'native' throws if the addon cannot load. */
export function useBackend(which: 'native' | 'reference' | Kernels): Kernels {
  const prev = kernels();
  if (typeof which !== 'string') active = which;
  else if (which === 'reference') active = referenceKernels;
  else {
    const native = loadNativeKernels();
    if (!native) throw new Error(`the native compute core is not available: ${nativeLoadError()}`);
    active = native;
  }
  return prev;
}

/** Runs fn with the given backend active. */
export function withBackend<T>(which: 'native' | 'reference' | Kernels, fn: () => T): T {
  const prev = useBackend(which);
  try {
    return fn();
  } finally {
    active = prev;
  }
}
