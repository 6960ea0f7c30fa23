/**
 * Grouping of processed modalities by type, in chunks that fit one encoder call.
 * @module
 */

/** One chunk of same-type items, with their positions in the input list. */
export interface TypeGroup<T> {
  type: string;
  /** Positions of `items` in the list given to {@link groupByType}, ascending. */
  indices: number[];
  items: T[];
}

/**
 * Splits `items` into chunks of one type each, at most `maxBatchSize(type)` long. Types come in the order they
 * first appear, items keep their order within a type, and `indices` say where each item came from, so results
 * can be scattered back:
 *
 * ```ts
 * const out = new Array(items.length);
 * for (const g of groupByType(items, (t) => modalities[t].config.maxBatchSize)) {
 *   const embedded = run(g.items);
 *   g.indices.forEach((i, j) => (out[i] = embedded[j]));
 * }
 * ```
 */
export function groupByType<T extends { type: string }>(
  items: readonly T[],
  maxBatchSize: number | ((type: string) => number),
): Array<TypeGroup<T>> {
  const byType = new Map<string, number[]>();
  items.forEach((it, i) => {
    const list = byType.get(it.type);
    if (list) list.push(i);
    else byType.set(it.type, [i]);
  });
  const out: Array<TypeGroup<T>> = [];
  for (const [type, idx] of byType) {
    const size = typeof maxBatchSize === 'number' ? maxBatchSize : maxBatchSize(type);
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`maxBatchSize for "${type}" must be a positive integer, got ${size}`);
    for (let s = 0; s < idx.length; s += size) {
      const indices = idx.slice(s, s + size);
      out.push({ type, indices, items: indices.map((i) => items[i]!) });
    }
  }
  return out;
}
