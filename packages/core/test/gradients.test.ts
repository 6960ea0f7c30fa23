/** ensureGradients(): tfjs-core's gradients under the wasm backend, the host UnsortedSegmentSum, matMulTrainable. */
import * as tf from '@tensorflow/tfjs-core';
import { ensureGradients, matMulTrainable, selectBackend } from '@multimeditron/core';

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  ensureGradients();
});

test('the gradient of gather with repeated and out-of-order indices is a scatter-add (UnsortedSegmentSum on wasm)', () => {
  const table = tf.variable(tf.tensor2d([[1, 2], [3, 4], [5, 6]]));
  const idx = tf.tensor1d([2, 0, 2, 2], 'int32');
  const w = tf.tensor2d([[1, 10], [2, 20], [3, 30], [4, 40]]);
  const n0 = tf.memory().numTensors;
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(tf.gather(table, idx), w)) as tf.Scalar, [table]);
  expect(Array.from(grads[table.name]!.dataSync())).toEqual([2, 20, 0, 0, 1 + 3 + 4, 10 + 30 + 40]);
  expect(ensureGradients().fallbacks).toEqual([]); // already registered: nothing new
  tf.dispose([value, grads[table.name]!]);
  expect(tf.memory().numTensors).toBe(n0);
  tf.dispose([table, idx, w]);
});

test('matMulTrainable has the values and gradients of tf.matMul', () => {
  const a = tf.variable(tf.randomNormal([5, 7], 0, 1, 'float32', 1));
  const b = tf.variable(tf.randomNormal([7, 3], 0, 1, 'float32', 2));
  const dy = tf.randomNormal([5, 3], 0, 1, 'float32', 3);
  const ours = tf.variableGrads(() => tf.sum(tf.mul(matMulTrainable(a as tf.Tensor2D, b as tf.Tensor2D), dy)) as tf.Scalar, [a, b]);
  const ref = tf.variableGrads(() => tf.sum(tf.mul(tf.matMul(a, b), dy)) as tf.Scalar, [a, b]);
  expect(ours.value.dataSync()[0]).toBeCloseTo(ref.value.dataSync()[0]!, 4);
  for (const v of [a, b]) {
    const x = ours.grads[v.name]!.dataSync();
    const y = ref.grads[v.name]!.dataSync();
    x.forEach((g, i) => expect(Math.abs(g - y[i]!)).toBeLessThan(1e-5));
  }
  tf.dispose([a, b, dy, ours.value, ref.value, ...Object.values(ours.grads), ...Object.values(ref.grads)]);
});
