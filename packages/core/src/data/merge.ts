/**
 * The embedding merge: token embeddings for every position, with each modality's embedding rows written into
 * its placeholder slots.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '../errors.js';
import type { CollatedBatch } from './collator.js';

/**
 * Builds `inputsEmbeds` [batchSize, seqLength, hidden] for a collated batch: position p of row b holds row
 * `inputIds[b, p]` of `tokenEmbeddings` [vocab, hidden], except the slots of `batch.modalityRanges[k]`, which
 * hold the rows of `modalityEmbeddings[k]` ([end - start, hidden]) in order. Runs in `tf.tidy`: only the result
 * is left for the caller to dispose. Throws {@link ShapeError} on a count, shape or id mismatch.
 */
export function mergeEmbeddings(tokenEmbeddings: tf.Tensor2D, batch: CollatedBatch, modalityEmbeddings: readonly tf.Tensor2D[]): tf.Tensor3D {
  const { batchSize, seqLength, inputIds, modalityRanges } = batch;
  if (tokenEmbeddings.rank !== 2) throw new ShapeError(`tokenEmbeddings must be [vocab, hidden], got [${tokenEmbeddings.shape}]`);
  const [vocab, hidden] = tokenEmbeddings.shape;
  if (modalityEmbeddings.length !== modalityRanges.length) {
    throw new ShapeError(`${modalityEmbeddings.length} modality embeddings for ${modalityRanges.length} modality ranges`);
  }
  const n = batchSize * seqLength;
  if (inputIds.length !== n) throw new ShapeError(`inputIds has ${inputIds.length} entries, expected ${batchSize} x ${seqLength}`);
  // source row of every position: ids index the token rows, slots index the concatenated modality rows after them
  const source = new Int32Array(n);
  for (let p = 0; p < n; p++) {
    const id = inputIds[p]!;
    if (id < 0 || id >= vocab) throw new ShapeError(`token id ${id} at position ${p} is outside the embedding table (vocab ${vocab})`);
    source[p] = p;
  }
  let offset = n;
  modalityRanges.forEach((r, k) => {
    const e = modalityEmbeddings[k]!;
    const rows = r.end - r.start;
    if (e.rank !== 2 || e.shape[0] !== rows || e.shape[1] !== hidden) {
      throw new ShapeError(`modalityEmbeddings[${k}] (${r.type}, batch ${r.batchIndex}) is [${e.shape}], expected [${rows}, ${hidden}]`);
    }
    if (r.batchIndex < 0 || r.batchIndex >= batchSize || r.start < 0 || r.end > seqLength) {
      throw new ShapeError(`modality range ${k} (${r.batchIndex}, ${r.start}..${r.end}) is outside the batch`);
    }
    const base = r.batchIndex * seqLength;
    for (let j = 0; j < rows; j++) source[base + r.start + j] = offset + j;
    offset += rows;
  });
  return tf.tidy(() => {
    const tokens = tf.gather(tokenEmbeddings, tf.tensor1d(inputIds, 'int32'));
    const table = modalityEmbeddings.length ? tf.concat([tokens, ...modalityEmbeddings], 0) : tokens;
    return tf.reshape(tf.gather(table, tf.tensor1d(source, 'int32')), [batchSize, seqLength, hidden]) as tf.Tensor3D;
  });
}
