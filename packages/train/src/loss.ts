/**
 * The Hugging Face causal-LM loss (`ForCausalLMLoss` without `num_items_in_batch`, which is what MultiMeditron's
 * trainer uses): the logits at position t - 1 predict `labels[t]`; cross-entropy in float32; labels -100 are
 * ignored; the mean is over the labelled tokens of the micro-batch.
 *
 * Only the scored rows go through the LM head: the hidden states at the positions before each labelled token are
 * gathered first, so the [rows, vocab] logits exist for the labelled tokens only (a 128k vocabulary makes the
 * full [batch, length, vocab] tensor the largest of the step).
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { IGNORE_TOKEN_INDEX, ShapeError } from '@multimeditron/core';

/** Where the loss is scored in a padded batch. */
export interface LossTargets {
  /** Flat indices `b * T + (t - 1)` of the hidden rows that predict a label. */
  rows: Int32Array;
  /** The label of each of those rows (`labels[b, t]`). */
  labels: Int32Array;
}

/** The scored rows of a flat `[batch * length]` label array: every t >= 1 with `labels[t] != -100`. */
export function lossTargets(labels: ArrayLike<number>, batchSize: number, seqLength: number): LossTargets {
  if (labels.length !== batchSize * seqLength) throw new ShapeError(`labels has ${labels.length} entries, expected ${batchSize} x ${seqLength}`);
  const rows: number[] = [];
  const targets: number[] = [];
  for (let b = 0; b < batchSize; b++) {
    for (let t = 1; t < seqLength; t++) {
      const y = labels[b * seqLength + t]!;
      if (y === IGNORE_TOKEN_INDEX) continue;
      rows.push(b * seqLength + t - 1);
      targets.push(y);
    }
  }
  return { rows: Int32Array.from(rows), labels: Int32Array.from(targets) };
}

/**
 * Mean cross-entropy of `logits` [n, vocab] against `labels` [n]: `logsumexp(z) - z[label]`, float32. Labels must
 * be in the vocabulary (the -100 rows are removed by {@link lossTargets}).
 */
export function crossEntropy(logits: tf.Tensor2D, labels: Int32Array): tf.Scalar {
  const [n, vocab] = logits.shape;
  if (labels.length !== n) throw new ShapeError(`${labels.length} labels for ${n} logit rows`);
  for (const y of labels) if (y < 0 || y >= vocab) throw new ShapeError(`label ${y} is outside the vocabulary (0..${vocab - 1})`);
  return tf.tidy(() => {
    const z = logits.dtype === 'float32' ? logits : tf.cast(logits, 'float32');
    // the picked logit as a masked sum: its gradient is a dense multiply, not a scatter. (tfjs-wasm 4.22's
    // OneHot writes int32 bits into a float32 output: build it as int32 and cast.)
    const hot = tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), vocab), 'float32');
    const picked = tf.sum(tf.mul(z, hot), 1);
    const lse = logSumExpRows(z);
    return tf.mean(tf.sub(lse, picked)) as tf.Scalar;
  });
}

/**
 * Row-wise log-sum-exp of [n, vocab] with a two-level sum: the row is cut into about sqrt(vocab) blocks summed
 * separately, then the block sums are added. A single float32 accumulation over a 128k vocabulary is off by
 * ~1e-4 in the loss; the two-level sum by ~1e-6. Differentiable with standard kernels (pad, exp, sum, log).
 */
export function logSumExpRows(z: tf.Tensor2D): tf.Tensor1D {
  const [n, vocab] = z.shape;
  return tf.tidy(() => {
    // the shift is a constant for the tape (its gradient cancels mathematically; read back, n values)
    const max = tf.tensor2d(tf.max(z, 1, true).dataSync() as Float32Array, [n, 1]);
    const e = tf.exp(tf.sub(z, max));
    const block = Math.ceil(Math.sqrt(vocab));
    const blocks = Math.ceil(vocab / block);
    const padded = blocks * block === vocab ? e : tf.pad(e, [[0, 0], [0, blocks * block - vocab]]);
    const sum = tf.sum(tf.sum(tf.reshape(padded, [n, blocks, block]), 2), 1);
    return tf.add(tf.log(sum), tf.reshape(max, [n])) as tf.Tensor1D;
  });
}

/**
 * The causal-LM loss of hidden states [batch, length, hidden] through `head` (hidden rows -> logits), divided by
 * `divisor` (the gradient-accumulation steps, as the HF Trainer does). Returns undefined when no token is
 * labelled. Runs in `tf.tidy`.
 */
export function causalLmLoss(
  hidden: tf.Tensor3D,
  targets: LossTargets,
  head: (rows: tf.Tensor2D) => tf.Tensor2D,
  divisor = 1,
): tf.Scalar | undefined {
  if (targets.rows.length === 0) return undefined;
  const [B, T, H] = hidden.shape;
  for (const r of targets.rows) if (r < 0 || r >= B * T) throw new ShapeError(`loss row ${r} is outside [0, ${B * T})`);
  return tf.tidy(() => {
    const flat = tf.reshape(hidden, [B * T, H]) as tf.Tensor2D;
    const rows = tf.gather(flat, tf.tensor1d(targets.rows, 'int32')) as tf.Tensor2D;
    const loss = crossEntropy(head(rows), targets.labels);
    return (divisor === 1 ? loss : tf.div(loss, divisor)) as tf.Scalar;
  });
}
