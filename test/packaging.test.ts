/**
 * Packaging proof: the packages as npm would publish them work in a fresh application outside the workspace.
 *
 * `npm pack` core, cli, image, audio and the example volume plugin (from their built dist/), install the tarballs plus the peers into a
 * temporary host app, then check: one copy each of tfjs-core, tsyringe, reflect-metadata and core on disk;
 * `npm ls` clean (no missing or invalid peer); the host's own ESM import and TypeScript types of
 * `@multimeditron/core` resolve through its exports map; plugins are discovered from the host's dependencies
 * (`doctor --json` reports both, and no duplicate copies); `multimeditron features` runs the packaged CLIP and
 * Whisper encoders on fixture files. A missing `files` entry, a wrong `exports` map, a dependency that should
 * be a peer, or a duplicated singleton fails here.
 */
import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { readSafetensors } from '@multimeditron/core';
import { golden, manifest, REPO_ROOT } from './helpers/fixtures.js';
import { writeNpy } from '../examples/plugin-volume/test/helpers.js';

const exec = promisify(execFile);

const PACKAGES = [
  { name: '@multimeditron/core', dir: 'packages/core' },
  { name: '@multimeditron/llm', dir: 'packages/llm' },
  { name: '@multimeditron/train', dir: 'packages/train' },
  { name: '@multimeditron/cli', dir: 'packages/cli' },
  { name: '@multimeditron/plugin-image', dir: 'plugins/image' },
  { name: '@multimeditron/plugin-audio', dir: 'plugins/audio' },
  // private (never published), but packed and installed like the others: the third-party example
  { name: '@multimeditron-examples/plugin-volume', dir: 'examples/plugin-volume' },
];
const PLUGINS = ['@multimeditron-examples/plugin-volume', '@multimeditron/plugin-audio', '@multimeditron/plugin-image'];
const SINGLETONS = ['@tensorflow/tfjs-core', 'tsyringe', 'reflect-metadata', '@multimeditron/core'];

/** The environment for child processes: no hub downloads, and no workspace settings inherited from `npm test`. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HF_HUB_OFFLINE: '1', MULTIMEDITRON_LOG: 'error' };
  // `npm test` exports its whole configuration (prefix, local_prefix, workspace settings...) to child
  // processes; keep only what says where the cache and the registry are.
  const keep = /^npm_config_(cache|userconfig|globalconfig|cafile|registry|strict_ssl|proxy|https_proxy|noproxy)$/i;
  for (const k of Object.keys(env)) {
    if (/^npm_/i.test(k) && !keep.test(k)) delete env[k];
  }
  delete env['MULTIMEDITRON_BACKEND'];
  return env;
}

let tmp: string;
let host: string;
let bin: string;
const timings: Record<string, number> = {};

async function timed<T>(label: string, f: () => Promise<T>): Promise<T> {
  const t0 = Date.now();
  try {
    return await f();
  } finally {
    timings[label] = (Date.now() - t0) / 1000;
  }
}

/** Runs the installed `multimeditron` in the host; returns exit code and output (never throws on exit != 0). */
async function mm(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec(process.execPath, [bin, ...args], { cwd: host, env: childEnv(), maxBuffer: 16 << 20 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Every copy of `pkg` on disk under the host's node_modules (nested ones included). */
async function copiesOf(pkg: string): Promise<string[]> {
  const found: string[] = [];
  async function walk(nm: string): Promise<void> {
    const entries = await fs.readdir(nm, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory() || e.name === '.bin') continue;
      const dirs = e.name.startsWith('@')
        ? (await fs.readdir(path.join(nm, e.name))).map((s) => path.join(nm, e.name, s))
        : [path.join(nm, e.name)];
      for (const d of dirs) {
        if (path.relative(nm, d).split(path.sep).join('/') === pkg) found.push(d);
        await walk(path.join(d, 'node_modules'));
      }
    }
  }
  await walk(path.join(host, 'node_modules'));
  return found;
}

beforeAll(async () => {
  for (const p of PACKAGES) {
    if (!existsSync(path.join(REPO_ROOT, p.dir, 'dist', 'index.js'))) {
      throw new Error(`${p.name} is not built (${p.dir}/dist/index.js missing): run the build first (npm test does)`);
    }
  }
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-packaging-'));
  host = path.join(tmp, 'host');
  const tarballs = path.join(tmp, 'tarballs');
  await fs.mkdir(host);
  await fs.mkdir(tarballs);
  const packed = await timed('npm pack', () =>
    exec('npm', ['pack', ...PACKAGES.flatMap((p) => ['-w', p.name]), '--pack-destination', tarballs, '--json', '--ignore-scripts'], {
      cwd: REPO_ROOT, env: childEnv(), maxBuffer: 16 << 20,
    }),
  );
  const packInfo = JSON.parse(packed.stdout) as Array<{ name: string; filename: string; files: Array<{ path: string }> }>;
  expect(packInfo.map((p) => p.name).sort()).toEqual(PACKAGES.map((p) => p.name).sort());
  for (const p of packInfo) {
    const files = p.files.map((f) => f.path);
    // only what "files" allows: dist/, bin/ (cli), README, LICENSE, package.json
    expect(files.filter((f) => !/^(dist\/|bin\/|README\.md$|LICENSE$|package\.json$)/.test(f))).toEqual([]);
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/index.d.ts');
  }
  await fs.writeFile(path.join(host, 'package.json'), `${JSON.stringify({ name: 'mm-packaging-host', version: '1.0.0', private: true, type: 'module' }, null, 2)}\n`);
  await timed('npm install', () =>
    exec(
      'npm',
      [
        'install', ...packInfo.map((p) => path.join(tarballs, p.filename)),
        '@tensorflow/tfjs-core@^4.22.0', 'tsyringe@^4.10.0', 'reflect-metadata@^0.2.2',
        '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error',
      ],
      { cwd: host, env: childEnv(), maxBuffer: 16 << 20 },
    ),
  );
  bin = path.join(host, 'node_modules', '@multimeditron', 'cli', 'bin', 'multimeditron.js');
}, 240_000);

afterAll(async () => {
  process.stderr.write(`packaging timings (s): ${JSON.stringify(timings)}\n`);
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

describe('packed packages in a fresh host app', () => {
  test('no tfjs-node, one copy of each singleton on disk, and npm ls reports no problem', async () => {
    expect(existsSync(path.join(host, 'node_modules', '@tensorflow', 'tfjs-node'))).toBe(false);
    expect(existsSync(path.join(host, 'node_modules', '@tensorflow', 'tfjs-node-gpu'))).toBe(false);
    for (const pkg of SINGLETONS) {
      const copies = await copiesOf(pkg);
      expect({ pkg, copies: copies.map((c) => path.relative(host, c)) }).toEqual({ pkg, copies: [path.join('node_modules', pkg)] });
    }
    // exits non-zero on a missing/invalid peer or an extraneous package
    await timed('npm ls', () => exec('npm', ['ls', '--all', '--json'], { cwd: host, env: childEnv(), maxBuffer: 64 << 20 }));
  });

  test("the host's own import and TypeScript types resolve through the exports maps", async () => {
    await fs.writeFile(path.join(host, 'main.mjs'), [
      "import 'reflect-metadata';",
      "import { createMultimeditron, PLUGIN_API_VERSION } from '@multimeditron/core';",
      "const mm = await createMultimeditron({ backend: 'wasm' });",
      'console.log(JSON.stringify({ api: PLUGIN_API_VERSION, source: mm.plugins.source,',
      '  loaded: mm.plugins.loaded.map((p) => p.name).sort(), errors: mm.plugins.errors.map((e) => e.message),',
      '  duplicates: mm.duplicates.map((d) => d.package), backend: mm.backend?.backend }));',
      "const volume = await mm.modalities.fromPretrained('volume_3d', { hiddenSize: 8, embedDim: 4, volumeSize: [4, 8, 8], patchSize: [2, 4, 4], poolSize: [1, 2, 2] });",
      "const raw = await mm.loaders.create('fs-volume', { basePath: '.' }).load({ type: 'image_3d', value: 'scan.npy' });",
      "const out = volume.forward(volume.processor.processAll({ type: 'image_3d', value: raw }).map((p) => p.value));",
      'console.log(JSON.stringify({ volume: out.shape }));',
    ].join('\n'));
    await fs.writeFile(path.join(host, 'scan.npy'), writeNpy(Array.from({ length: 5 * 9 * 9 }, (_, i) => i % 17), [5, 9, 9], '<i2'));
    const { stdout } = await exec(process.execPath, ['main.mjs'], { cwd: host, env: childEnv() });
    const [report, volume] = stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(report).toEqual({ api: 1, source: 'dependencies', loaded: PLUGINS, errors: [], duplicates: [], backend: 'wasm' });
    expect(volume).toEqual({ volume: [1, 2, 8] });

    await fs.writeFile(path.join(host, 'check.ts'), [
      "import 'reflect-metadata';",
      "import { createMultimeditron, InputError, type Multimeditron } from '@multimeditron/core';",
      "import imagePlugin from '@multimeditron/plugin-image';",
      "import audioPlugin from '@multimeditron/plugin-audio';",
      "import { AutoLanguageModel, type DecoderForCausalLM } from '@multimeditron/llm';",
      'export const loadLlm: (dir: string) => Promise<DecoderForCausalLM> = (dir) => AutoLanguageModel.fromPretrained(dir);',
      "import volumePlugin, { VolumeConfig } from '@multimeditron-examples/plugin-volume';",
      'export async function start(): Promise<Multimeditron> {',
      '  const mm = await createMultimeditron({ plugins: [imagePlugin, audioPlugin, volumePlugin], strict: true });',
      '  const tokens: number = new VolumeConfig().numEmbeddings();',
      '  void tokens;',
      "  const err: InputError = new InputError('x.png', 'bad');",
      '  void err;',
      '  return mm;',
      '}',
    ].join('\n'));
    // skipLibCheck as any real app has it: third-party declarations (@huggingface/tokenizers' extension-less
    // relative imports, tfjs-core's global `Long`) do not check under NodeNext. Our own missing or broken
    // types still fail: an unresolved module is an implicit-any error in check.ts itself.
    await fs.writeFile(path.join(host, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true,
        experimentalDecorators: true, typeRoots: [path.join(REPO_ROOT, 'node_modules', '@types')], types: ['node'],
      },
      files: ['check.ts'],
    }));
    const tsc = await exec(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: host, env: childEnv() })
      .then(() => '', (e: { stdout?: string }) => e.stdout ?? String(e));
    expect(tsc).toBe('');
  });

  test('gradients under plain Node: the packaged ensureGradients() makes tf.variableGrads work on wasm', async () => {
    await fs.writeFile(path.join(host, 'grad.mjs'), [
      "import * as tf from '@tensorflow/tfjs-core';",
      "import { selectBackend, ensureGradients } from '@multimeditron/core';",
      "import { crossEntropy } from '@multimeditron/train';",
      "await selectBackend({ backend: 'wasm' });",
      'const setup = ensureGradients();',
      'const w = tf.variable(tf.tensor2d([[0.5, -1, 2], [1, 0, -0.5]]));',
      'const x = tf.tensor2d([[1, 2], [3, -1]]);',
      // a gather (UnsortedSegmentSum in its gradient, which wasm lacks) and the loss
      'const { value, grads } = tf.variableGrads(() => crossEntropy(tf.gather(tf.matMul(x, w), [1, 0]), Int32Array.from([2, 0])));',
      'console.log(JSON.stringify({ source: setup.source.endsWith("tfjs-gradients.cjs"), fallbacks: setup.fallbacks, loss: value.dataSync()[0], grad: Array.from(grads[w.name].dataSync()) }));',
    ].join('\n'));
    const { stdout } = await exec(process.execPath, ['grad.mjs'], { cwd: host, env: childEnv() });
    const r = JSON.parse(stdout.trim().split('\n').pop()!);
    expect(r.source).toBe(true);
    expect(r.fallbacks).toEqual(['UnsortedSegmentSum']);
    expect(Number.isFinite(r.loss)).toBe(true);
    expect(r.grad).toHaveLength(6);
    expect(r.grad.some((g: number) => g !== 0)).toBe(true);
  });

  test('doctor --json: the plugins are discovered from the dependencies, no duplicates, ok', async () => {
    const r = await mm('doctor', '--json', '--backend', 'wasm');
    const report = JSON.parse(r.stdout);
    expect(report.plugins.errors).toEqual([]);
    expect(report.duplicates).toEqual([]);
    expect(report.plugins.from).toContain('dependencies');
    expect(report.plugins.loaded.map((p: { name: string }) => p.name).sort()).toEqual(PLUGINS);
    expect(report.backend.backend).toBe('wasm');
    expect(report.ok).toBe(true);
    expect(r.code).toBe(0);
  });

  test('plugins: the image, audio and volume modalities and loaders are registered', async () => {
    const r = await mm('plugins', '--json');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    const modalities = out.modalities.map((m: { name: string; modalityType: string }) => `${m.modalityType}:${m.name}`).sort();
    expect(modalities).toEqual(['audio:meditron_whisper', 'image:meditron_clip', 'image_3d:volume_3d']);
    expect(out.loaders.map((l: { name: string }) => l.name).sort()).toEqual(['fs-audio', 'fs-image', 'fs-volume', 'raw-audio', 'raw-image', 'raw-volume']);
  });

  test('features: packaged CLIP on a fixture image agrees with the reference', async () => {
    const cases = manifest().clip.cases as Array<{ name: string; image: string; keys: Record<string, string> }>;
    const c = cases.find((x) => x.name === 'retina')!;
    const out = path.join(host, 'image.safetensors');
    const r = await timed('features image', () => mm('features', golden('clip-tiny'), golden(c.image), '--out', out, '--backend', 'wasm', '--json'));
    expect(r).toMatchObject({ code: 0 });
    const got = (await readSafetensors(out)).tensors;
    const want = (await readSafetensors(golden('expected', 'clip-tiny.safetensors'))).tensors;
    const lhs = got.get('0.last_hidden_state')!;
    const ref = want.get(c.keys['last_hidden_state']!)!;
    expect(lhs.shape.reduce((a, b) => a * b, 1)).toBe(ref.shape.reduce((a, b) => a * b, 1));
    // the fixture README's loose end-to-end bound (it holds whichever resize the processor uses)
    let maxAbs = 0;
    for (let i = 0; i < lhs.data.length; i++) maxAbs = Math.max(maxAbs, Math.abs(Number(lhs.data[i]) - Number(ref.data[i])));
    expect(maxAbs).toBeLessThan(manifest().clip.tolerances.end_to_end_with_sharp_resize_loose.last_hidden_state_max_abs);
  });

  test('features: packaged Whisper on a fixture audio file agrees with the reference', async () => {
    const cases = manifest().whisper.cases as Array<{ name: string; audio: string; keys: Record<string, string> }>;
    const c = cases.find((x) => x.name === 'speech_2s')!;
    const out = path.join(host, 'audio.safetensors');
    const r = await timed('features audio', () => mm('features', golden('whisper-tiny'), golden(c.audio), '--out', out, '--backend', 'wasm', '--json'));
    expect(r).toMatchObject({ code: 0 });
    const got = (await readSafetensors(out)).tensors;
    const want = (await readSafetensors(golden('expected', 'whisper-tiny.safetensors'))).tensors;
    const tol = manifest().whisper.tolerances;
    for (const [key, bound] of [['input_features', tol.input_features.atol], ['last_hidden_state', tol.resampled_other_resampler_loose.last_hidden_state_max_abs]] as const) {
      const a = got.get(`0.${key}`)!;
      const b = want.get(c.keys[key]!)!;
      expect({ key, n: a.data.length }).toEqual({ key, n: b.data.length });
      let maxAbs = 0;
      for (let i = 0; i < a.data.length; i++) maxAbs = Math.max(maxAbs, Math.abs(Number(a.data[i]) - Number(b.data[i])));
      expect({ key, ok: maxAbs <= bound }).toEqual({ key, ok: true });
    }
  });

  test('generate: the packaged CLI answers with the Qwen3 fixture (greedy ids of the reference)', async () => {
    const qwen = path.join(REPO_ROOT, 'test', 'fixtures', 'golden-llm', 'qwen3-tiny');
    const r = await timed('generate', () => mm('generate', qwen, '--prompt', 'Radiology reports describe findings, then give an impression.', '--greedy', '--max-new-tokens', '3', '--json', '--backend', 'wasm'));
    expect(r).toMatchObject({ code: 0 });
    const want = (await readSafetensors(path.join(REPO_ROOT, 'test', 'fixtures', 'golden-llm', 'expected', 'qwen3-tiny.safetensors'))).tensors;
    const ids = Array.from(want.get('plain.generated_ids')!.data as BigInt64Array, Number).slice(0, 3);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!).ids).toEqual(ids);
  });
});
