/** Whether differentiable ops record the autograd graph (on by default; off inside `noGrad`). */
let gradEnabled = true;

/** True when ops record the graph (false inside `noGrad`). */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with graph recording forced on or off. */
export function withGrad<T>(enabled: boolean, fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = enabled;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs fn without recording any graph (inference, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  return withGrad(false, fn);
}
