/**
 * The key/value cache of a decoder: per layer the keys (stored transposed, [batch, kvHeads, headDim, T], so
 * that the attention scores are a plain matMul) and the values ([batch, kvHeads, T, headDim]), plus, per row,
 * which cached positions are real tokens (left padding stays masked) and how many real tokens were seen
 * (the next position id).
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '@multimeditron/core';

/** A KV cache for one batch. Create it with `decoder.createCache(batchSize)`, release it with {@link dispose}. */
export class KVCache {
  /** Keys per layer, transposed: [batch, kvHeads, headDim, length]. */
  readonly keys: Array<tf.Tensor4D | undefined>;
  /** Values per layer: [batch, kvHeads, length, headDim]. */
  readonly values: Array<tf.Tensor4D | undefined>;
  /** Per row, 1 where the cached position is a real token, 0 for padding. */
  readonly keyMask: number[][];
  /** Per row, how many real tokens the cache holds (the position id of the row's next token). */
  readonly seen: number[];
  private disposed = false;

  constructor(
    readonly batchSize: number,
    readonly numLayers: number,
  ) {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new ShapeError(`cache batch size must be a positive integer, got ${batchSize}`);
    this.keys = new Array(numLayers).fill(undefined);
    this.values = new Array(numLayers).fill(undefined);
    this.keyMask = Array.from({ length: batchSize }, () => []);
    this.seen = new Array(batchSize).fill(0);
  }

  /** Number of cached positions (the same for every row: padding included). */
  get length(): number {
    return this.keyMask[0]!.length;
  }

  /** Whether {@link dispose} was called. */
  get isDisposed(): boolean {
    return this.disposed;
  }

  /**
   * Appends one layer's new keys/values (called by the decoder inside its tidy). The previous tensors are
   * released; the new ones are kept past the tidy.
   */
  append(layer: number, kT: tf.Tensor4D, v: tf.Tensor4D): { kT: tf.Tensor4D; v: tf.Tensor4D } {
    if (this.disposed) throw new ShapeError('the KV cache was disposed');
    const oldK = this.keys[layer];
    const oldV = this.values[layer];
    const k2 = oldK ? (tf.concat([oldK, kT], 3) as tf.Tensor4D) : kT;
    const v2 = oldV ? (tf.concat([oldV, v], 2) as tf.Tensor4D) : v;
    tf.keep(k2);
    tf.keep(v2);
    oldK?.dispose();
    oldV?.dispose();
    this.keys[layer] = k2;
    this.values[layer] = v2;
    return { kT: k2, v: v2 };
  }

  /** Records the mask of the positions just appended (after every layer has appended). */
  commit(mask: readonly (readonly number[])[]): void {
    mask.forEach((row, b) => {
      for (const m of row) {
        this.keyMask[b]!.push(m ? 1 : 0);
        if (m) this.seen[b]!++;
      }
    });
  }

  /** Releases every cached tensor. */
  dispose(): void {
    for (let i = 0; i < this.numLayers; i++) {
      this.keys[i]?.dispose();
      this.values[i]?.dispose();
      this.keys[i] = undefined;
      this.values[i] = undefined;
    }
    this.disposed = true;
  }
}
