/**
 * Host tensors: plain typed arrays with a shape. Processors produce them on the CPU (possibly in a worker
 * thread, since they are transferable); modalities turn them into tfjs tensors inside `tf.tidy`.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from './errors.js';

/** Typed arrays a {@link HostTensor} may hold. */
export type HostData = Float32Array | Int32Array | Uint8Array;

/** A dense row-major array with a shape, independent of any tfjs backend. */
export interface HostTensor<D extends HostData = HostData> {
  data: D;
  shape: number[];
}

/** Number of elements of a shape (1 for a 0-d shape). */
export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Builds a host tensor and checks that the data length matches the shape. */
export function hostTensor<D extends HostData>(data: D, shape: number[]): HostTensor<D> {
  if (shapeSize(shape) !== data.length) {
    throw new ShapeError(`data has ${data.length} elements but shape [${shape.join(', ')}] needs ${shapeSize(shape)}`);
  }
  return { data, shape };
}

/** True for a {@link HostTensor}-shaped object. */
export function isHostTensor(x: unknown): x is HostTensor {
  return (
    typeof x === 'object' &&
    x !== null &&
    ArrayBuffer.isView((x as HostTensor).data) &&
    Array.isArray((x as HostTensor).shape)
  );
}

/** Converts a host tensor to a tfjs tensor (float32 unless the data is Int32). Caller owns the result. */
export function toTensor(x: HostTensor | tf.Tensor): tf.Tensor {
  if (x instanceof tf.Tensor) return x;
  if (x.data instanceof Int32Array) return tf.tensor(x.data, x.shape, 'int32');
  if (x.data instanceof Uint8Array) return tf.tensor(Int32Array.from(x.data), x.shape, 'int32');
  return tf.tensor(x.data, x.shape, 'float32');
}

/** Copies a tfjs tensor back to a host tensor (synchronously). */
export function toHostTensor(t: tf.Tensor): HostTensor {
  const data = t.dtype === 'int32' ? (t.dataSync() as Int32Array) : (t.dataSync() as Float32Array);
  return { data: data.slice(), shape: [...t.shape] };
}
