/**
 * tfjs backend selection.
 *
 * Order: `MULTIMEDITRON_BACKEND` (`tensorflow`, `wasm`, `cpu`) if set; otherwise `@tensorflow/tfjs-node-gpu`
 * if it is installed and loads, then `@tensorflow/tfjs-node`, then `@tensorflow/tfjs-backend-wasm` (SIMD).
 * The pure-JS `cpu` backend is a last resort (about 40x slower than wasm on matmul).
 * @module
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { BackendError } from './errors.js';

/** Backends a user can ask for. */
export type BackendRequest = 'tensorflow' | 'wasm' | 'cpu';
/** Every value `MULTIMEDITRON_BACKEND` (or the `backend` option) accepts. */
export const BACKEND_REQUESTS: readonly BackendRequest[] = ['tensorflow', 'wasm', 'cpu'];

/** The optional native packages, in order of preference. */
export const NATIVE_BACKEND_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;

/** One package the selector tried. */
export interface BackendAttempt {
  package: string;
  ok: boolean;
  error?: string;
}

/** What {@link selectBackend} chose, and why. */
export interface BackendChoice {
  /** The tfjs backend name now active (`tensorflow`, `wasm`, `cpu`). */
  backend: string;
  /** The package that provides it. */
  package: string;
  /** Human-readable reason. */
  reason: string;
  /** What was requested through options or `MULTIMEDITRON_BACKEND`, if anything. */
  requested?: BackendRequest;
  /** Every package tried, in order. */
  attempts: BackendAttempt[];
  /** tfjs-core version. */
  tfjsVersion: string;
}

/** Options of {@link selectBackend}. */
export interface SelectBackendOptions {
  /** Overrides `MULTIMEDITRON_BACKEND`. */
  backend?: BackendRequest;
  /** Folder the optional native packages are resolved from (default: the current directory, then core). */
  resolveFrom?: string;
  /** Environment to read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
}

/** How to get the native backend, one line each (the CLI prints them as hints). */
const INSTALL_HINT = [
  'npm install @tensorflow/tfjs-node-gpu   # NVIDIA GPU (CUDA 11.2, cuDNN 8.1); downloads libtensorflow at install time',
  'npm install @tensorflow/tfjs-node       # CPU; downloads libtensorflow at install time',
  'or unset MULTIMEDITRON_BACKEND to use the wasm backend (see docs/backends.md)',
];

async function importFrom(spec: string, from: string[]): Promise<void> {
  let resolved: string | undefined;
  let lastErr: unknown;
  for (const dir of from) {
    try {
      resolved = createRequire(path.join(dir, 'noop.js')).resolve(spec);
      break;
    } catch (e) {
      lastErr = e;
    }
  }
  if (!resolved) {
    const err = new Error(`not installed (${(lastErr as Error)?.message?.split('\n')[0] ?? 'cannot resolve'})`);
    (err as Error & { notFound: boolean }).notFound = true;
    throw err;
  }
  await import(pathToFileURL(resolved).href);
}

async function activate(name: string): Promise<void> {
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`tf.setBackend('${name}') failed`);
  await tf.ready();
}

async function tryNative(pkgs: readonly string[], from: string[], attempts: BackendAttempt[]): Promise<string | undefined> {
  for (const pkg of pkgs) {
    try {
      await importFrom(pkg, from);
      if (!tf.findBackendFactory('tensorflow')) {
        throw new Error('imported, but registered no "tensorflow" backend (a second copy of @tensorflow/tfjs-core?)');
      }
      await activate('tensorflow');
      attempts.push({ package: pkg, ok: true });
      return pkg;
    } catch (e) {
      attempts.push({ package: pkg, ok: false, error: (e as Error).message });
    }
  }
  return undefined;
}

async function useWasm(attempts: BackendAttempt[]): Promise<void> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    await activate('wasm');
    attempts.push({ package: '@tensorflow/tfjs-backend-wasm', ok: true });
  } catch (e) {
    attempts.push({ package: '@tensorflow/tfjs-backend-wasm', ok: false, error: (e as Error).message });
    throw e;
  }
}

/**
 * Chooses and activates a tfjs backend. Idempotent: calling it again re-activates the same choice.
 * Throws {@link BackendError} when an explicitly requested backend cannot be had.
 */
export async function selectBackend(options: SelectBackendOptions = {}): Promise<BackendChoice> {
  const env = options.env ?? process.env;
  const raw = options.backend ?? (env['MULTIMEDITRON_BACKEND']?.trim().toLowerCase() || undefined);
  if (raw !== undefined && !BACKEND_REQUESTS.includes(raw as BackendRequest)) {
    const where = options.backend !== undefined ? 'backend option' : 'MULTIMEDITRON_BACKEND';
    throw new BackendError(String(raw), `${where}="${String(raw)}" is not one of ${BACKEND_REQUESTS.join(', ')}`, {
      suggestions: [
        `Set ${where} to one of: ${BACKEND_REQUESTS.join(', ')} (tensorflow = @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node).`,
        'Or leave it unset for automatic selection (native TensorFlow if installed, else wasm).',
      ],
    });
  }
  const requested = raw as BackendRequest | undefined;
  const from = [...new Set([options.resolveFrom ?? process.cwd(), path.dirname(fileURLToPath(import.meta.url))])];
  const attempts: BackendAttempt[] = [];
  const done = (pkg: string, reason: string): BackendChoice => ({
    backend: tf.getBackend(), package: pkg, reason, requested, attempts, tfjsVersion: tf.version_core,
  });

  if (requested === 'tensorflow') {
    const pkg = await tryNative(NATIVE_BACKEND_PACKAGES, from, attempts);
    if (!pkg) {
      const why = attempts.map((a) => `  ${a.package}: ${a.error}`).join('\n');
      throw new BackendError(
        'tensorflow',
        `The "tensorflow" backend was requested but is not available:\n${why}\n` +
          'Install it with `npm install @tensorflow/tfjs-node-gpu` (NVIDIA GPU: CUDA 11.2 + cuDNN 8.1) or ' +
          '`npm install @tensorflow/tfjs-node` (CPU); see docs/backends.md.',
        { suggestions: INSTALL_HINT },
      );
    }
    return done(pkg, `requested by ${options.backend ? 'option' : 'MULTIMEDITRON_BACKEND'}=tensorflow`);
  }
  if (requested === 'wasm') {
    try {
      await useWasm(attempts);
    } catch (e) {
      throw new BackendError('wasm', `the wasm backend failed to initialise: ${(e as Error).message}`, { cause: e });
    }
    return done('@tensorflow/tfjs-backend-wasm', `requested by ${options.backend ? 'option' : 'MULTIMEDITRON_BACKEND'}=wasm`);
  }
  if (requested === 'cpu') {
    await import('@tensorflow/tfjs-backend-cpu');
    await activate('cpu');
    attempts.push({ package: '@tensorflow/tfjs-backend-cpu', ok: true });
    return done('@tensorflow/tfjs-backend-cpu', `requested by ${options.backend ? 'option' : 'MULTIMEDITRON_BACKEND'}=cpu (slow: pure JavaScript)`);
  }

  const pkg = await tryNative(NATIVE_BACKEND_PACKAGES, from, attempts);
  // packages that are installed but failed to load deserve a mention in the reason (doctor prints it)
  const broken = attempts.filter((a) => !a.ok && !a.error?.startsWith('not installed'));
  const brokenNote = broken.length ? `; ${broken.map((a) => `${a.package} is installed but failed to load`).join('; ')}` : '';
  if (pkg) return done(pkg, `${pkg} is installed and loaded${brokenNote}`);
  try {
    await useWasm(attempts);
    return done(
      '@tensorflow/tfjs-backend-wasm',
      `default: ${broken.length ? 'no native TensorFlow backend loaded' : 'no native TensorFlow backend installed'}; wasm (SIMD) is the fastest available${brokenNote}`,
    );
  } catch {
    await import('@tensorflow/tfjs-backend-cpu');
    await activate('cpu');
    attempts.push({ package: '@tensorflow/tfjs-backend-cpu', ok: true });
    return done('@tensorflow/tfjs-backend-cpu', 'last resort: wasm failed to initialise (see attempts); cpu is slow');
  }
}
