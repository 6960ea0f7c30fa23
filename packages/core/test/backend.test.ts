/**
 * The backend selector, tested "as though" @tensorflow/tfjs-node(-gpu) were installed: fake packages of those
 * names in temporary hosts register a backend named "tensorflow" (the cpu backend's factory and kernels under
 * that name) on the same @tensorflow/tfjs-core instance, through a symlink to the repository's copy. The real
 * packages are never installed (their install script downloads libtensorflow).
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { BACKEND_REQUESTS, BackendError, createMultimeditron, NATIVE_BACKEND_PACKAGES, selectBackend } from '@multimeditron/core';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';
import { linkPackage, makeSandbox, writePackage } from './helpers/plugin-packages.js';

/** Entry of a fake native package: registers "tensorflow" as the real ones do. */
const FAKE_NATIVE = (pkg: string) => `
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
const cpu = tf.findBackendFactory('cpu');
if (!tf.findBackendFactory('tensorflow')) {
  for (const k of tf.getKernelsForBackend('cpu')) tf.registerKernel({ ...k, backendName: 'tensorflow' });
  tf.registerBackend('tensorflow', cpu, 3);
}
globalThis.__fakeNativeLoaded = [...(globalThis.__fakeNativeLoaded ?? []), '${pkg}'];
`;

/** Entry of a native package that is installed but cannot load (e.g. no CUDA libraries). */
const BROKEN_NATIVE = `
throw new Error('libcudart.so.11.0: cannot open shared object file: No such file or directory');
`;

let sandbox: Awaited<ReturnType<typeof makeSandbox>>;
const hosts = { none: '', node: '', gpuBroken: '', gpu: '' };
const env = (value?: string): NodeJS.ProcessEnv => (value === undefined ? {} : { MULTIMEDITRON_BACKEND: value });

async function fakePackage(host: string, name: string, source: string): Promise<void> {
  await writePackage(path.join(host, 'node_modules', name), { name, version: '4.22.0', type: 'module', main: 'index.js' }, { 'index.js': source });
}

// the cpu backend (and the fakes built on it) greet Node users once per backend with an advert for tfjs-node
const realWarn = console.warn;

beforeAll(async () => {
  console.warn = (...args: unknown[]) => {
    if (!String(args[0]).includes('looks like you are running TensorFlow.js in Node.js')) realWarn(...args);
  };
  sandbox = await makeSandbox('mm-backend-');
  await linkPackage(sandbox.root, '@tensorflow/tfjs-backend-cpu', path.join(REPO_ROOT, 'node_modules', '@tensorflow', 'tfjs-backend-cpu'));
  for (const k of Object.keys(hosts) as Array<keyof typeof hosts>) {
    hosts[k] = path.join(sandbox.root, k);
    await writePackage(hosts[k], { name: `host-${k}`, version: '1.0.0', type: 'module' });
  }
  await fakePackage(hosts.node, '@tensorflow/tfjs-node', FAKE_NATIVE('@tensorflow/tfjs-node'));
  await fakePackage(hosts.gpuBroken, '@tensorflow/tfjs-node-gpu', BROKEN_NATIVE);
  await fakePackage(hosts.gpuBroken, '@tensorflow/tfjs-node', FAKE_NATIVE('@tensorflow/tfjs-node'));
  await fakePackage(hosts.gpu, '@tensorflow/tfjs-node-gpu', FAKE_NATIVE('@tensorflow/tfjs-node-gpu'));
  await fakePackage(hosts.gpu, '@tensorflow/tfjs-node', 'throw new Error("tfjs-node must not be tried when tfjs-node-gpu loads");\n');
});

afterAll(async () => {
  console.warn = realWarn;
  await selectBackend({ backend: 'wasm' });
  await sandbox.cleanup();
});

afterEach(async () => {
  // every test leaves wasm active, as the rest of the suite expects
  await selectBackend({ backend: 'wasm' });
  expect(tf.getBackend()).toBe('wasm');
});

/** A matmul on the active backend, to show it computes. */
function smoke(): number[] {
  return tf.tidy(() => Array.from(tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2]), tf.tensor2d([1, 0, 0, 1], [2, 2])).dataSync()));
}

describe('without native packages (this machine)', () => {
  test('the default is wasm, and the reason says why', async () => {
    const c = await selectBackend({ resolveFrom: hosts.none, env: env() });
    expect(c.backend).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(c.package).toBe('@tensorflow/tfjs-backend-wasm');
    expect(c.reason).toMatch(/^default: no native TensorFlow backend installed; wasm \(SIMD\)/);
    expect(c.requested).toBeUndefined();
    expect(c.tfjsVersion).toBe(tf.version_core);
    expect(c.attempts.map((a) => [a.package, a.ok])).toEqual([
      ['@tensorflow/tfjs-node-gpu', false], ['@tensorflow/tfjs-node', false], ['@tensorflow/tfjs-backend-wasm', true],
    ]);
    expect(c.attempts[0]!.error).toMatch(/^not installed/);
    expect(smoke()).toEqual([1, 2, 3, 4]);
  });

  test('asking for tensorflow gives a BackendError that says how to install it', async () => {
    for (const request of [{ env: env('tensorflow') }, { backend: 'tensorflow' as const, env: env() }]) {
      const err = await selectBackend({ resolveFrom: hosts.none, ...request }).then(() => undefined, (e) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect(err.code).toBe('E_BACKEND');
      expect(err.backend).toBe('tensorflow');
      expect(err.message).toContain('The "tensorflow" backend was requested but is not available');
      for (const pkg of NATIVE_BACKEND_PACKAGES) expect(err.message).toContain(`${pkg}: not installed`);
      expect(err.message).toContain('Install it with `npm install @tensorflow/tfjs-node-gpu` (NVIDIA GPU: CUDA 11.2 + cuDNN 8.1)');
      expect(err.message).toContain('or `npm install @tensorflow/tfjs-node` (CPU); see docs/backends.md.');
      expect(err.suggestions.map((s: string) => s.split(/\s+#/)[0]!.trim())).toEqual([
        'npm install @tensorflow/tfjs-node-gpu', 'npm install @tensorflow/tfjs-node', 'or unset MULTIMEDITRON_BACKEND to use the wasm backend (see docs/backends.md)',
      ]);
    }
    // the failed request left the previous backend active
    expect(tf.getBackend()).toBe('wasm');
  });

  test('MULTIMEDITRON_BACKEND=cpu and =wasm are honoured (case and spaces ignored)', async () => {
    const cpu = await selectBackend({ resolveFrom: hosts.none, env: env(' CPU ') });
    expect([cpu.backend, cpu.requested, cpu.package]).toEqual(['cpu', 'cpu', '@tensorflow/tfjs-backend-cpu']);
    expect(cpu.reason).toBe('requested by MULTIMEDITRON_BACKEND=cpu (slow: pure JavaScript)');
    expect(smoke()).toEqual([1, 2, 3, 4]);
    const wasm = await selectBackend({ resolveFrom: hosts.none, env: env('wasm') });
    expect([wasm.backend, wasm.reason]).toEqual(['wasm', 'requested by MULTIMEDITRON_BACKEND=wasm']);
    // the option wins over the environment
    const opt = await selectBackend({ backend: 'cpu', resolveFrom: hosts.none, env: env('wasm') });
    expect([opt.backend, opt.reason]).toEqual(['cpu', 'requested by option=cpu (slow: pure JavaScript)']);
  });

  test.each(['gpu', 'tfjs-node', 'webgl', 'wasm,cpu', 'node'])('MULTIMEDITRON_BACKEND=%s is rejected, naming the valid values', async (value) => {
    const err = await selectBackend({ resolveFrom: hosts.none, env: env(value) }).then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(BackendError);
    expect(err.backend).toBe(value);
    expect(err.message).toBe(`MULTIMEDITRON_BACKEND="${value}" is not one of ${BACKEND_REQUESTS.join(', ')}`);
    expect(err.suggestions[0]).toContain('tensorflow, wasm, cpu');
  });

  test('an empty MULTIMEDITRON_BACKEND means automatic; an invalid option names the option', async () => {
    expect((await selectBackend({ resolveFrom: hosts.none, env: env('  ') })).backend).toBe('wasm');
    const err = await selectBackend({ backend: 'gpu' as never, env: env() }).then(() => undefined, (e) => e);
    expect(err.message).toBe('backend option="gpu" is not one of tensorflow, wasm, cpu');
  });

  test('createMultimeditron reads MULTIMEDITRON_BACKEND from the environment', async () => {
    const saved = process.env['MULTIMEDITRON_BACKEND'];
    process.env['MULTIMEDITRON_BACKEND'] = 'cpu';
    try {
      const mm = await createMultimeditron({ hostRoot: hosts.none, plugins: [] });
      expect(mm.backend!.backend).toBe('cpu');
      process.env['MULTIMEDITRON_BACKEND'] = 'bogus';
      await expect(createMultimeditron({ hostRoot: hosts.none, plugins: [] })).rejects.toBeInstanceOf(BackendError);
    } finally {
      if (saved === undefined) delete process.env['MULTIMEDITRON_BACKEND'];
      else process.env['MULTIMEDITRON_BACKEND'] = saved;
    }
  });
});

describe('as though @tensorflow/tfjs-node(-gpu) were installed', () => {
  test('@tensorflow/tfjs-node is picked by default when present', async () => {
    const c = await selectBackend({ resolveFrom: hosts.node, env: env() });
    expect(c.backend).toBe('tensorflow');
    expect(tf.getBackend()).toBe('tensorflow');
    expect(c.package).toBe('@tensorflow/tfjs-node');
    expect(c.reason).toBe('@tensorflow/tfjs-node is installed and loaded');
    expect(c.attempts.map((a) => [a.package, a.ok])).toEqual([['@tensorflow/tfjs-node-gpu', false], ['@tensorflow/tfjs-node', true]]);
    expect(smoke()).toEqual([1, 2, 3, 4]);
    // the fake registered on our tfjs-core: one copy
    expect((globalThis as { __fakeNativeLoaded?: string[] }).__fakeNativeLoaded).toContain('@tensorflow/tfjs-node');
  });

  test('MULTIMEDITRON_BACKEND=tensorflow picks it, with resolveFrom pointing at the host', async () => {
    const c = await selectBackend({ resolveFrom: hosts.node, env: env('tensorflow') });
    expect([c.backend, c.package, c.requested]).toEqual(['tensorflow', '@tensorflow/tfjs-node', 'tensorflow']);
    expect(c.reason).toBe('requested by MULTIMEDITRON_BACKEND=tensorflow');
    // =wasm still overrides the installed native package
    const w = await selectBackend({ resolveFrom: hosts.node, env: env('wasm') });
    expect(w.backend).toBe('wasm');
  });

  test('createMultimeditron resolves the native package from its hostRoot', async () => {
    const mm = await createMultimeditron({ hostRoot: hosts.node, plugins: [] });
    expect(mm.backend!.package).toBe('@tensorflow/tfjs-node');
  });

  test('an installed @tensorflow/tfjs-node-gpu that fails to load falls back to @tensorflow/tfjs-node, and says so', async () => {
    const c = await selectBackend({ resolveFrom: hosts.gpuBroken, env: env() });
    expect([c.backend, c.package]).toEqual(['tensorflow', '@tensorflow/tfjs-node']);
    expect(c.reason).toBe('@tensorflow/tfjs-node is installed and loaded; @tensorflow/tfjs-node-gpu is installed but failed to load');
    expect(c.attempts[0]!.error).toContain('libcudart.so.11.0');
  });

  test('@tensorflow/tfjs-node-gpu comes first when it loads', async () => {
    const c = await selectBackend({ resolveFrom: hosts.gpu, env: env('tensorflow') });
    expect([c.backend, c.package]).toEqual(['tensorflow', '@tensorflow/tfjs-node-gpu']);
    expect(c.attempts.map((a) => a.package)).toEqual(['@tensorflow/tfjs-node-gpu']);
  });

  test('a host without the packages still gets wasm by default, even after "tensorflow" was registered', async () => {
    expect(tf.findBackendFactory('tensorflow')).toBeDefined();
    const c = await selectBackend({ resolveFrom: hosts.none, env: env() });
    expect(c.backend).toBe('wasm');
    await expect(selectBackend({ resolveFrom: hosts.none, env: env('tensorflow') })).rejects.toBeInstanceOf(BackendError);
  });
});
