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
 * kernel that runs tfjs-backend-cpu's implementation on the host copy of the inputs.
 * @module
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { BackendError } from './errors.js';

/** Kernels that gradients call and that some backends lack; {@link ensureGradients} adds CPU fallbacks. */
export const GRADIENT_FALLBACK_KERNELS: readonly string[] = ['UnsortedSegmentSum'];

/** What {@link ensureGradients} did. */
export interface GradientSetup {
  /** Where the gradient registrations came from (`already registered`, or the bundle's path). */
  source: string;
  /** Kernels given a CPU fallback on the active backend. */
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

/** Runs a CPU kernel on host copies of wasm (or any backend's) inputs and writes the outputs back. */
function cpuFallback(kernelName: string, cpuKernel: tf.KernelConfig): tf.KernelConfig {
  return {
    kernelName,
    backendName: tf.getBackend(),
    kernelFunc: ({ inputs, backend, attrs }) => {
      const cpu = tf.findBackend('cpu');
      if (!cpu) throw new BackendError(tf.getBackend(), `the CPU fallback of ${kernelName} needs @tensorflow/tfjs-backend-cpu registered`);
      const be = backend as tf.KernelBackend & { makeOutput?: (s: number[], d: tf.DataType, o?: number, v?: unknown) => tf.TensorInfo };
      const moved: Record<string, tf.TensorInfo> = {};
      const created: tf.DataId[] = [];
      for (const [k, t] of Object.entries(inputs)) {
        const info = t as tf.TensorInfo;
        const values = be.readSync(info.dataId);
        const dataId = cpu.write(values, info.shape, info.dtype);
        created.push(dataId);
        moved[k] = { dataId, shape: info.shape, dtype: info.dtype };
      }
      try {
        const result = cpuKernel.kernelFunc({ inputs: moved, backend: cpu, attrs: attrs ?? {} });
        const outs = Array.isArray(result) ? result : [result];
        const back = outs.map((o) => {
          const values = cpu.readSync(o.dataId);
          created.push(o.dataId);
          if (typeof be.makeOutput === 'function') return be.makeOutput([...o.shape], o.dtype, undefined, values);
          return { dataId: be.write(values as tf.backend_util.BackendValues, o.shape, o.dtype), shape: o.shape, dtype: o.dtype };
        });
        return Array.isArray(result) ? back : back[0]!;
      } finally {
        for (const id of created) cpu.disposeData(id);
      }
    },
  };
}

let registered: string | undefined;

/**
 * Makes `tf.grad`, `tf.variableGrads` and optimizers work: registers tfjs-core's gradients once per process
 * (a no-op when something else, e.g. `@tensorflow/tfjs` or jest's ESM loading, already did), then gives the
 * active backend CPU fallbacks for the kernels of {@link GRADIENT_FALLBACK_KERNELS} it lacks. Call it after the
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
  if (backendName !== 'cpu') {
    for (const k of GRADIENT_FALLBACK_KERNELS) {
      if (tf.getKernel(k, backendName)) continue;
      const cpuKernel = tf.getKernel(k, 'cpu');
      if (!cpuKernel) continue;
      tf.registerKernel(cpuFallback(k, cpuKernel));
      fallbacks.push(k);
    }
  }
  return { source: registered ?? 'already registered', fallbacks };
}
