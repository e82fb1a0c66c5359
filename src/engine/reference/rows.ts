/** Reference row kernels: softmax, log-softmax, RMSNorm, SwiGLU, cross-entropy. Plain loops,
 * accumulating in float64; the oracle for the native kernels. */

export function softmax(x: Float32Array, y: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let m = -Infinity;
    for (let j = 0; j < cols; j++) m = Math.max(m, x[o + j]!);
    let s = 0;
    for (let j = 0; j < cols; j++) {
      const e = Math.exp(x[o + j]! - m);
      y[o + j] = e;
      s += e;
    }
    const inv = 1 / s;
    for (let j = 0; j < cols; j++) y[o + j] = y[o + j]! * inv;
  }
}

export function softmaxBackward(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += dy[o + j]! * y[o + j]!;
    for (let j = 0; j < cols; j++) dx[o + j] = y[o + j]! * (dy[o + j]! - dot);
  }
}

function logSumExp(x: Float32Array, o: number, cols: number): number {
  let m = -Infinity;
  for (let j = 0; j < cols; j++) m = Math.max(m, x[o + j]!);
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let j = 0; j < cols; j++) s += Math.exp(x[o + j]! - m);
  return m + Math.log(s);
}

export function logSoftmax(x: Float32Array, y: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const lse = logSumExp(x, o, cols);
    for (let j = 0; j < cols; j++) y[o + j] = x[o + j]! - lse;
  }
}

export function logSoftmaxBackward(y: Float32Array, dy: Float32Array, dx: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let s = 0;
    for (let j = 0; j < cols; j++) s += dy[o + j]!;
    for (let j = 0; j < cols; j++) dx[o + j] = dy[o + j]! - Math.exp(y[o + j]!) * s;
  }
}

export function rmsNorm(x: Float32Array, w: Float32Array, y: Float32Array, rstd: Float32Array, rows: number, cols: number, eps: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let ss = 0;
    for (let j = 0; j < cols; j++) ss += x[o + j]! * x[o + j]!;
    const rs = Math.fround(1 / Math.sqrt(ss / cols + eps));
    rstd[r] = rs;
    for (let j = 0; j < cols; j++) y[o + j] = x[o + j]! * rs * w[j]!;
  }
}

/**
 * y = x * rstd * w, rstd = (mean(x^2) + eps)^-1/2:
 * dx = rstd * (dy*w - x * rstd^2 * mean(dy*w*x)), dw += dy * x * rstd.
 */
export function rmsNormBackward(x: Float32Array, w: Float32Array, rstd: Float32Array, dy: Float32Array,
  dx: Float32Array, dw: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const rs = rstd[r]!;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += dy[o + j]! * w[j]! * x[o + j]!;
    const c = (rs * rs * rs * dot) / cols;
    for (let j = 0; j < cols; j++) {
      dx[o + j] = rs * dy[o + j]! * w[j]! - c * x[o + j]!;
      dw[j] = dw[j]! + dy[o + j]! * x[o + j]! * rs;
    }
  }
}

export function siluMul(g: Float32Array, u: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const z = g[i]!;
    y[i] = (z / (1 + Math.exp(-z))) * u[i]!;
  }
}

export function siluMulBackward(g: Float32Array, u: Float32Array, dy: Float32Array, dg: Float32Array, du: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const z = g[i]!;
    const s = 1 / (1 + Math.exp(-z));
    const silu = z * s;
    du[i] = dy[i]! * silu;
    dg[i] = dy[i]! * u[i]! * (s * (1 + z * (1 - s)));
  }
}

export function crossEntropy(logits: Float32Array, targets: Int32Array, loss: Float32Array, lse: Float32Array, rows: number, vocab: number): void {
  for (let r = 0; r < rows; r++) {
    const t = targets[r]!;
    if (t >= vocab) throw new RangeError(`crossEntropy: target ${t} at row ${r} is out of range for a vocabulary of ${vocab}`);
    const l = logSumExp(logits, r * vocab, vocab);
    lse[r] = l;
    loss[r] = t < 0 ? 0 : l - logits[r * vocab + t]!;
  }
}

export function crossEntropyBackward(logits: Float32Array, targets: Int32Array, lse: Float32Array, dloss: Float32Array,
  dlogits: Float32Array, rows: number, vocab: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * vocab;
    const t = targets[r]!;
    // a target >= vocab would index into the next row: an error, as in the forward
    if (t >= vocab) throw new RangeError(`crossEntropyBackward: target ${t} at row ${r} is out of range for a vocabulary of ${vocab}`);
    if (t < 0) {
      dlogits.fill(0, o, o + vocab);
      continue;
    }
    const l = lse[r]!;
    const d = dloss[r]!;
    for (let j = 0; j < vocab; j++) dlogits[o + j] = Math.exp(logits[o + j]! - l) * d;
    dlogits[o + t] = dlogits[o + t]! - d;
  }
}
