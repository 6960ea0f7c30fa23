import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { createMultimeditron, selectBackend } from '@multimeditron/core';
import { run } from '@multimeditron/cli';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';

const exec = promisify(execFile);
const TSC = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const NAME = '@acme/multimeditron-plugin-ecg';

let tmp: string;
let pluginDir: string;

/** Runs the CLI in-process and returns its exit code (leaving process.exitCode clean for jest). */
async function cli(...argv: string[]): Promise<number> {
  const write = process.stdout.write;
  const writeErr = process.stderr.write;
  process.stdout.write = (() => true) as typeof process.stdout.write;
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    return await run(argv);
  } finally {
    process.stdout.write = write;
    process.stderr.write = writeErr;
    process.exitCode = undefined;
  }
}

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  if (!existsSync(path.join(REPO_ROOT, 'packages', 'core', 'dist', 'index.d.ts'))) {
    throw new Error('build core first (npx tsc -b packages/core): the generated plugin compiles against its dist/');
  }
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-create-plugin-'));
  pluginDir = path.join(tmp, 'ecg-plugin');
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('multimeditron create-plugin', () => {
  test('writes a complete plugin package', async () => {
    expect(await cli('create-plugin', NAME, '--dir', pluginDir, '--modality-type', 'ecg')).toBe(0);
    const files = (await fs.readdir(pluginDir, { recursive: true })).map(String).sort();
    expect(files).toEqual(expect.arrayContaining([
      'package.json', 'tsconfig.json', 'README.md', 'src/index.ts', 'src/config.ts', 'src/loaders.ts',
      'src/processor.ts', 'src/modality.ts', 'test/plugin.test.ts',
    ]));
    const pkg = JSON.parse(await fs.readFile(path.join(pluginDir, 'package.json'), 'utf8'));
    const core = JSON.parse(await fs.readFile(path.join(REPO_ROOT, 'packages', 'core', 'package.json'), 'utf8'));
    expect(pkg).toMatchObject({
      name: NAME,
      type: 'module',
      multimeditron: { plugin: true, apiVersion: 1 },
      exports: { '.': { types: './dist/index.d.ts', import: './dist/index.js' } },
      files: ['dist', 'README.md'],
    });
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual(['@multimeditron/core', '@tensorflow/tfjs-core', 'reflect-metadata', 'tsyringe']);
    expect(pkg.peerDependencies['@multimeditron/core']).toBe(`^${core.version}`);
    expect(pkg.peerDependencies['@tensorflow/tfjs-core']).toBe(core.peerDependencies['@tensorflow/tfjs-core']);
    expect(pkg.dependencies).toBeUndefined();
    const sources = await Promise.all(['config', 'loaders', 'processor', 'modality'].map((f) => fs.readFile(path.join(pluginDir, 'src', `${f}.ts`), 'utf8')));
    for (const s of sources) expect(s).not.toMatch(/TODO|not implemented/i);
  });

  test('the generated package builds with tsc and its own tests pass offline', async () => {
    // The workspace's installed packages stand in for `npm install`.
    await fs.symlink(path.join(REPO_ROOT, 'node_modules'), path.join(pluginDir, 'node_modules'), 'dir');
    await exec(process.execPath, [TSC, '-p', 'tsconfig.json'], { cwd: pluginDir });
    expect(existsSync(path.join(pluginDir, 'dist', 'index.js'))).toBe(true);
    expect(existsSync(path.join(pluginDir, 'dist', 'index.d.ts'))).toBe(true);
    await exec(process.execPath, [TSC, '-p', 'tsconfig.test.json'], { cwd: pluginDir });
    const { stdout } = await exec(process.execPath, ['--test', 'build-test/test/'], { cwd: pluginDir });
    expect(stdout).toMatch(/# pass 4/);
    expect(stdout).toMatch(/# fail 0/);
  });

  test('npm pack would publish dist/ and README.md only', async () => {
    // no npm settings inherited from a parent `npm test` (its prefix would point at the workspace)
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) || /^npm_config_(cache|userconfig|registry)$/i.test(k)));
    const { stdout } = await exec('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: pluginDir, env });
    const files: string[] = JSON.parse(stdout)[0].files.map((f: { path: string }) => f.path);
    expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts', 'dist/modality.js']));
    expect(files.filter((f) => !f.startsWith('dist/') && f !== 'package.json' && f !== 'README.md')).toEqual([]);
  });

  test('a host discovers the generated plugin and runs its modality', async () => {
    const host = path.join(tmp, 'host');
    await fs.mkdir(path.join(host, 'node_modules', '@acme'), { recursive: true });
    await fs.writeFile(path.join(host, 'package.json'), JSON.stringify({ name: 'host', private: true, dependencies: { [NAME]: '0.1.0' } }));
    await fs.symlink(pluginDir, path.join(host, 'node_modules', NAME), 'dir');
    const mm = await createMultimeditron({ hostRoot: host, backend: false, strict: true });
    expect(mm.plugins.source).toBe('dependencies');
    expect(mm.plugins.loaded.map((p) => ({ name: p.name, modalities: p.modalities, loaders: p.loaders }))).toEqual([
      { name: NAME, modalities: ['ecg_linear'], loaders: ['fs-ecg', 'raw-ecg'] },
    ]);
    const modality = await mm.modalities.fromPretrained('ecg_linear', { hiddenSize: 12, inputDim: 24, numTokens: 6 });
    try {
      const raw = await mm.loaders.create('raw-ecg').load({ type: 'ecg', value: Array.from({ length: 24 }, (_, i) => Math.cos(i / 3)) });
      const [p] = modality.processor.processAll({ type: 'ecg', value: raw });
      expect(p!.numEmbeddings).toBe(6);
      const before = tf.memory().numTensors;
      const out = modality.forward([p!.value, p!.value]);
      expect(out.shape).toEqual([2, 6, 12]);
      expect(Array.from(out.dataSync()).every(Number.isFinite)).toBe(true);
      out.dispose();
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      modality.dispose();
    }
  });

  test('usage errors exit with 2 and write nothing', async () => {
    expect(await cli('create-plugin', 'Not A Name', '--dir', path.join(tmp, 'bad1'))).toBe(2);
    expect(await cli('create-plugin', 'ok-name', '--dir', path.join(tmp, 'bad2'), '--modality-type', 'ECG-1')).toBe(2);
    expect(await cli('create-plugin', 'ok-name', '--dir', path.join(tmp, 'bad3'), '--model-type', '9x')).toBe(2);
    expect(existsSync(path.join(tmp, 'bad1'))).toBe(false);
    expect(existsSync(path.join(tmp, 'bad2'))).toBe(false);
    expect(existsSync(path.join(tmp, 'bad3'))).toBe(false);
    // an existing, non-empty folder is refused unless --force
    expect(await cli('create-plugin', NAME, '--dir', pluginDir)).toBe(2);
    expect(await cli('create-plugin')).toBe(2);
  });
});
