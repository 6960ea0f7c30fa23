/**
 * Gradients under plain Node.
 *
 * tfjs-core's Node entry (`dist/tf-core.node.js`) registers no gradient: since tfjs 4 the registrations live in
 * `dist/register_all_gradients.js`, an ES-module tree with extensionless imports that Node cannot load (bundlers
 * and jest can). The `@tensorflow/tfjs` umbrella package inlines them, but it also brings layers, converter,
 * data and webgl. Instead, `npm run build` bundles that one file of the installed tfjs-core into
 * `dist/tfjs-gradients.cjs` (scripts/build-gradients.mjs, esbuild), and {@link ensureGradients} requires it: the
 * bundle registers into the process-wide gradient registry of the tfjs-core already loaded (the registry and
 * the engine are globals), and its ops run on that engine.
 *
 * Some gradients call kernels a backend does not implement (tfjs-wasm 4.22 has no `UnsortedSegmentSum`,
 * the gradient of `gather`). {@link ensureGradients} registers, for the active backend, a fallback for each such
 * kernel that runs on the host copy of the inputs (one pass, written here).
 * @module
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { BackendError } from './errors.js';


/**
 * `a [m, k] x b [k, n]` whose gradients are plain products of explicitly transposed operands
 * (`dA = dY · transpose(b)`, `dB = transpose(a) · dY`). tfjs-core's own MatMul gradient multiplies with
 * `transposeA`/`transposeB` set, which tfjs-wasm runs in a scalar loop (~3 GFLOP/s here) instead of XNNPACK
 * (~30 GFLOP/s); the explicit transpose costs one copy. Same values as `tf.matMul`.
 */
export const matMulTrainable: (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D = tf.customGrad(
  ((a: tf.Tensor2D, b: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([a, b]);
    return {
      value: tf.matMul(a, b),
      // each transposed copy is released as soon as its product is done (the backward keeps every other
      // intermediate until it ends)
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => [
        tf.tidy(() => tf.matMul(dy, tf.transpose(saved[1]!) as tf.Tensor2D)),
        tf.tidy(() => tf.matMul(tf.transpose(saved[0]!) as tf.Tensor2D, dy)),
      ],
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0],
) as unknown as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

/** What {@link ensureGradients} did. */
export interface GradientSetup {
  /** Where the gradient registrations came from (`already registered`, or the bundle's path). */
  source: string;
  /** Kernels given a host fallback on the active backend. */
  fallbacks: string[];
}

const BUNDLE = 'tfjs-gradients.cjs';

function bundlePath(): string {
  // dist/gradients.js sits beside the bundle; under jest this file is src/gradients.ts, the bundle ../dist/
  const here = import.meta.url;
  for (const rel of [`./${BUNDLE}`, `../dist/${BUNDLE}`]) {
    const p = fileURLToPath(new URL(rel, here));
    if (existsSync(p)) return p;
  }
  throw new BackendError(
    'gradients',
    `tfjs gradient registrations not found (${BUNDLE} beside @multimeditron/core's dist): run \`npm run build\` at the repository root, or reinstall @multimeditron/core`,
  );
}

/**
 * `UnsortedSegmentSum` on the host for backends that lack it: one pass over the input (tfjs-backend-cpu's kernel
 * makes one pass per segment, quadratic for an embedding table's gradient). Ids outside [0, numSegments) are
 * dropped, as in TensorFlow.
 */
function unsortedSegmentSumKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: 'UnsortedSegmentSum',
    backendName,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const numSegments = Number((attrs as { numSegments: number }).numSegments);
      const be = backend as tf.KernelBackend & { makeOutput?: (s: number[], d: tf.DataType, o?: number, v?: unknown) => tf.TensorInfo };
      const values = be.readSync(x.dataId) as Float32Array | Int32Array;
      const ids = be.readSync(segmentIds.dataId) as Int32Array;
      const n = ids.length;
      const inner = n === 0 ? 0 : values.length / n;
      const out = x.dtype === 'int32' ? new Int32Array(numSegments * inner) : new Float32Array(numSegments * inner);
      for (let i = 0; i < n; i++) {
        const s = ids[i]!;
        if (s < 0 || s >= numSegments) continue;
        const o = s * inner;
        const v = i * inner;
        for (let j = 0; j < inner; j++) out[o + j] += values[v + j]!;
      }
      const shape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
      if (typeof be.makeOutput === 'function') return be.makeOutput(shape, x.dtype, undefined, out);
      return { dataId: be.write(out, shape, x.dtype), shape, dtype: x.dtype };
    },
  };
}

/** Host fallbacks, by kernel name, for kernels that gradients call and that some backends lack. */
const FALLBACKS: Record<string, (backendName: string) => tf.KernelConfig> = { UnsortedSegmentSum: unsortedSegmentSumKernel };
/** Kernels that gradients call and that some backends lack; {@link ensureGradients} adds host fallbacks. */
export const GRADIENT_FALLBACK_KERNELS: readonly string[] = Object.keys(FALLBACKS);

let registered: string | undefined;

/**
 * Makes `tf.grad`, `tf.variableGrads` and optimizers work: registers tfjs-core's gradients once per process
 * (a no-op when something else, e.g. `@tensorflow/tfjs` or jest's ESM loading, already did), then gives the
 * active backend host fallbacks for the kernels of {@link GRADIENT_FALLBACK_KERNELS} it lacks. Call it after the
 * backend is selected (again after switching backends). Idempotent.
 */
export function ensureGradients(): GradientSetup {
  if (!tf.getGradient('Sum')) {
    const file = bundlePath();
    try {
      createRequire(import.meta.url)(file);
    } catch (e) {
      throw new BackendError('gradients', `cannot load the tfjs gradient registrations from ${file}: ${(e as Error).message}`, { cause: e });
    }
    if (!tf.getGradient('Sum')) throw new BackendError('gradients', `${file} registered no gradient (a second copy of @tensorflow/tfjs-core?)`);
    registered = file;
  }
  const fallbacks: string[] = [];
  const backendName = tf.getBackend();
  for (const [name, make] of Object.entries(FALLBACKS)) {
    if (tf.getKernel(name, backendName)) continue;
    tf.registerKernel(make(backendName));
    fallbacks.push(name);
  }
  return { source: registered ?? 'already registered', fallbacks };
}
