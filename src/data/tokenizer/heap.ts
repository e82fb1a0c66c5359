/**
 * Binary heaps used by BPE: a min-heap of plain numbers (merge candidates while encoding) and
 * a generic heap with a comparator (pair counts while training).
 */

/** A min-heap of numbers stored in a growable Float64Array. */
export class NumberMinHeap {
  private data: Float64Array;
  private n = 0;

  constructor(capacity = 16) {
    this.data = new Float64Array(Math.max(1, capacity));
  }

  /** Number of entries. */
  get size(): number {
    return this.n;
  }

  /** Removes every entry. */
  clear(): void {
    this.n = 0;
  }

  /** Adds a value. */
  push(v: number): void {
    if (this.n === this.data.length) {
      const grown = new Float64Array(this.data.length * 2);
      grown.set(this.data);
      this.data = grown;
    }
    const d = this.data;
    let i = this.n++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (d[parent]! <= v) break;
      d[i] = d[parent]!;
      i = parent;
    }
    d[i] = v;
  }

  /** Removes and returns the smallest value; undefined when empty. */
  pop(): number | undefined {
    if (this.n === 0) return undefined;
    const d = this.data;
    const top = d[0]!;
    const last = d[--this.n]!;
    let i = 0;
    const n = this.n;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && d[child + 1]! < d[child]!) child++;
      if (d[child]! >= last) break;
      d[i] = d[child]!;
      i = child;
    }
    if (n > 0) d[i] = last;
    return top;
  }
}

/** A heap ordered by `before(a, b)`: true when a must come out before b. */
export class Heap<T> {
  private readonly items: T[] = [];

  constructor(private readonly before: (a: T, b: T) => boolean) {}

  /** Number of entries. */
  get size(): number {
    return this.items.length;
  }

  /** Returns the first entry without removing it. */
  peek(): T | undefined {
    return this.items[0];
  }

  /** Adds an entry. */
  push(item: T): void {
    const a = this.items;
    let i = a.length;
    a.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(item, a[parent]!)) break;
      a[i] = a[parent]!;
      i = parent;
    }
    a[i] = item;
  }

  /** Removes and returns the first entry; undefined when empty. */
  pop(): T | undefined {
    const a = this.items;
    if (a.length === 0) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    const n = a.length;
    if (n === 0) return top;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.before(a[child + 1]!, a[child]!)) child++;
      if (!this.before(a[child]!, last)) break;
      a[i] = a[child]!;
      i = child;
    }
    a[i] = last;
    return top;
  }
}
