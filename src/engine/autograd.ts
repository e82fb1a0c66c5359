/**
 * Reverse-mode automatic differentiation.
 *
 * Every differentiable op produces its output with `attach(out, name, inputs, backward)`. When
 * gradients are enabled and some input requires a gradient, the output records a `GradNode`
 * holding the inputs and a closure computing their gradients from the output's gradient.
 * `backward(root)` walks the recorded graph in reverse topological order, sums gradients that
 * reach a tensor along several paths, and accumulates into `.grad` of leaves (parameters), so
 * calling backward on several losses before an optimizer step accumulates gradients.
 *
 * The graph is freed as backward runs (each node drops its closure after use): memory of a
 * training step's activations is released as soon as its gradients are propagated. Nodes refer
 * to their non-leaf inputs through those inputs' nodes (tensor.ts `GradNode`), never to the
 * tensors: what a step keeps for backward is exactly what the ops' closures capture.
 */
import { kernels } from './backend.js';
import { BinaryOp } from './kernels.js';
import { type BufferArena } from './arena.js';
import { activeArena, arenaSlabF32 } from './active-arena.js';
import { allocUninit, sameShape } from './ops/util.js';
import { fmtShape } from './layout.js';
import { noGrad, withGrad } from './grad-mode.js';
import { Tensor, attach, type GradNode, type GradTarget } from './tensor.js';

export { attach, type BackwardFn, type GradNode, type GradTarget } from './tensor.js';
export { isGradEnabled, noGrad, withGrad } from './grad-mode.js';

// ---- deferred weight gradients (the B/W split of ZeroBubble / DualPipe, DeepSeek-V3 §3.2.1) --

let deferred: Array<() => void> | null = null;

/**
 * Runs fn; every weight gradient of a linear layer (or of another op using
 * `accumulateWeightGrad`) that a backward pass inside fn would compute is returned as a closure
 * in `weightGrads` instead (in the order backward reached the layers).
 * Calling a closure accumulates that layer's dW into `w.grad` (allocating it if null); each
 * closure may run once. Weights that are not leaves (views or products of parameters) have no
 * `.grad` to accumulate into and are never deferred.
 */
export function deferWeightGrads<T>(fn: () => T): { result: T; weightGrads: Array<() => void> } {
  const prev = deferred;
  const weightGrads: Array<() => void> = [];
  deferred = weightGrads;
  try {
    const result = fn();
    return { result, weightGrads };
  } finally {
    deferred = prev;
  }
}

/** True inside `deferWeightGrads`: weight-gradient closures run later, so they must not read
 * buffers that are reused in the meantime. */
export function weightGradsDeferred(): boolean {
  return deferred !== null;
}

/**
 * Adds a weight gradient straight into the leaf parameter w, which spares autograd a dW tensor
 * and its copy into `.grad`. `add(into, beta)` gets `w.grad` (a contiguous float32 tensor of w's
 * shape) and must write dW into it: accumulate (+=) when beta is 1; when beta is 0, `into` is a
 * new tensor with unspecified contents (w had no gradient yet) that add must overwrite entirely.
 * Outside `deferWeightGrads` this runs now; inside, it is pushed as a deferred closure. Returns
 * false, doing nothing, when w is not a float32 leaf that requires grad (or its `.grad` is not a
 * contiguous float32 tensor of its shape): the caller then returns dW to autograd as usual.
 */
export function accumulateWeightGrad(w: Tensor, add: (into: Tensor, beta: 0 | 1) => void): boolean {
  if (w.dtype !== 'f32' || !w.requiresGrad || w.node !== null) return false;
  const g = w.grad;
  if (g && (g.dtype !== 'f32' || !g.isContiguous() || !sameShape(g.shape, w.shape))) return false;
  const run = (): void => {
    if (w.grad) add(w.grad, 1);
    else add((w.grad = new Tensor(arenaSlabF32(w.size) ?? allocUninit(w.size), w.shape, 'f32')), 0); // (arena.ts)
  };
  if (!deferred) {
    run();
    return true;
  }
  let pending = true;
  const name = w.name ?? fmtShape(w.shape);
  deferred.push(() => {
    if (!pending) throw new Error(`deferred weight gradient of ${name} was already applied`);
    pending = false;
    run();
  });
  return true;
}

/**
 * A user-defined differentiable function: forward computes the output from plain tensors (no
 * graph is recorded inside it), backward maps the output gradient to one gradient per input.
 */
export function customOp(
  name: string,
  inputs: readonly Tensor[],
  forward: (...xs: Tensor[]) => Tensor,
  backward: (grad: Tensor, ...xs: Tensor[]) => readonly (Tensor | null)[],
): Tensor {
  const out = noGrad(() => forward(...inputs));
  return attach(out, name, inputs, (g) => backward(g, ...inputs));
}

/** Topological order (inputs before outputs) of the graph reachable from root (leaves as tensors, the rest as nodes). */
function topoOrder(root: GradTarget): GradTarget[] {
  const order: GradTarget[] = [];
  const seen = new Set<GradTarget>();
  const stack: [GradTarget, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t instanceof Tensor ? [] : t.inputs;
    if (i < inputs.length) {
      top[1] = i + 1;
      const x = inputs[i];
      if (x && !seen.has(x)) {
        seen.add(x);
        stack.push([x, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

/** acc + g as a new tensor (gradients returned by ops may be shared, so never in place). */
function accumulate(acc: Tensor | undefined, g: Tensor): Tensor {
  if (!acc) return g;
  const a = acc.contiguous().f32();
  const b = g.contiguous().f32();
  const out = allocUninit(a.length);
  kernels().binary(BinaryOp.Add, a, b, out, a.length);
  return Tensor.fromF32(out, acc.shape);
}

/**
 * Backpropagates from `root`. With no `grad`, root must hold a single element (a loss) and its
 * gradient is 1. Leaves with requiresGrad get their gradient added to `.grad`.
 */
export function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) throw new Error('backward: the tensor does not require grad (no graph was recorded)');
  let g0 = grad;
  if (!g0) {
    if (root.size !== 1) throw new Error(`backward: a gradient is needed for a non-scalar tensor of shape [${root.shape.join(', ')}]`);
    g0 = Tensor.full(root.shape, 1);
  } else if (!sameShape(g0.shape, root.shape)) {
    throw new Error(`backward: gradient shape [${g0.shape.join(', ')}] does not match tensor shape [${root.shape.join(', ')}]`);
  }
  // Gradient closures compute with plain tensors: no graph of the backward pass is recorded.
  withGrad(false, () => runGraph(root, g0));
}

function runGraph(root: Tensor, g0: Tensor): void {
  const order = topoOrder(root.node ?? root);
  const grads = new Map<GradTarget, Tensor>();
  const rel = earlyRelease();
  grads.set(root.node ?? root, g0);
  rel?.hold(g0);
  for (let idx = order.length - 1; idx >= 0; idx--) {
    const t = order[idx]!;
    const g = grads.get(t);
    if (!g) continue;
    grads.delete(t);
    if (t instanceof Tensor) {
      if (t.requiresGrad) {
        if (t.grad) {
          const src = g.contiguous().f32();
          kernels().axpy(1, src, t.grad.f32(), src.length);
        } else {
          const src = g.contiguous().f32();
          const own = allocUninit(src.length); // .grad owns its storage (g may be shared)
          own.set(src);
          t.grad = Tensor.fromF32(own, t.shape);
        }
      }
      rel?.drop(g);
      rel?.flush();
      continue;
    }
    const node = t;
    if (!node.backward) throw new Error(`backward: the graph through '${node.name}' was already freed by an earlier backward()`);
    const gs = node.backward(g);
    if (gs.length !== node.inputs.length) throw new Error(`backward: '${node.name}' returned ${gs.length} gradients for ${node.inputs.length} inputs`);
    for (let i = 0; i < gs.length; i++) {
      const x = node.inputs[i];
      const gx = gs[i];
      if (!x || !gx) continue;
      if (!sameShape(gx.shape, x.shape)) {
        throw new Error(`backward: '${node.name}' produced a gradient of shape [${gx.shape.join(', ')}] for input ${i} of shape [${x.shape.join(', ')}]`);
      }
      const prev = grads.get(x);
      const acc = accumulate(prev, gx);
      grads.set(x, acc);
      rel?.hold(acc);
      if (prev) {
        rel?.drop(prev);
        rel?.consider(gx); // summed into acc, a new buffer
      }
    }
    rel?.drop(g);
    // the forward buffers this closure saved: let them go (a dropped one is reused from now on)
    if (rel && node.saved) rel.unholdSaved(node);
    rel?.flush();
    // Free the closure and its saved tensors, but keep the (now empty) node on its tensor so
    // that a second backward through this part of the graph fails loudly instead of silently
    // treating the tensor as a leaf.
    node.backward = null;
    node.inputs = [];
    node.saved = undefined;
    node.arena = undefined;
  }
}

/**
 * Early release of gradient buffers inside a step arena (arena.ts): a buffer taken during this
 * backward pass goes back to the arena as soon as no pending gradient refers to it, so the
 * backward reuses a few hot buffers instead of holding every gradient until the step ends.
 * Buffers from before the pass (forward activations, a caller's gradient) are never released.
 * Off outside an arena and inside `deferWeightGrads` (deferred closures read gradients later).
 */
class GradBuffers {
  private readonly refs = new Map<ArrayBuffer, number>();
  private readonly candidates: ArrayBuffer[] = [];
  /** Saved forward buffers to unhold once no pending gradient uses them. */
  private readonly unholdLater: ArrayBuffer[] = [];
  private readonly since: number;

  constructor(private readonly arena: BufferArena) {
    this.since = arena.epoch();
  }

  /** A pending gradient (an entry of the gradient map) uses t's buffer. */
  hold(t: Tensor): void {
    const b = t.data.buffer as ArrayBuffer;
    this.refs.set(b, (this.refs.get(b) ?? 0) + 1);
  }

  /** One use of t's buffer ended. */
  drop(t: Tensor): void {
    const b = t.data.buffer as ArrayBuffer;
    const n = (this.refs.get(b) ?? 1) - 1;
    if (n > 0) this.refs.set(b, n);
    else {
      this.refs.delete(b);
      this.candidates.push(b);
    }
  }

  /** t was consumed without ever being held. */
  consider(t: Tensor): void {
    this.candidates.push(t.data.buffer as ArrayBuffer);
  }

  /** A node's backward ran: its saved forward buffers are unheld (tensor.ts `attach`), those a
   * pending gradient still uses once it is consumed. */
  unholdSaved(node: GradNode): void {
    if (node.arena !== this.arena) return; // recorded in another arena: left to its reset
    for (const b of node.saved!) this.unholdLater.push(b as ArrayBuffer);
  }

  /** Releases the candidates no pending gradient uses. */
  flush(): void {
    for (const b of this.candidates) if (!this.refs.has(b)) this.arena.release(b, this.since);
    this.candidates.length = 0;
    let keep = 0;
    for (const b of this.unholdLater) {
      if (this.refs.has(b)) this.unholdLater[keep++] = b;
      else this.arena.unhold(b);
    }
    this.unholdLater.length = keep;
  }
}

function earlyRelease(): GradBuffers | null {
  const arena = activeArena();
  return arena && !weightGradsDeferred() ? new GradBuffers(arena) : null;
}
