import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './helpers.js';

describe('multimeditron doctor', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-doctor-'));
    const bad = path.join(dir, 'node_modules', 'broken-plugin');
    await fs.mkdir(bad, { recursive: true });
    await fs.writeFile(path.join(bad, 'package.json'), JSON.stringify({
      name: 'broken-plugin', version: '9.9.9', type: 'module', main: 'index.js', multimeditron: { plugin: true, apiVersion: 1 },
    }));
    await fs.writeFile(path.join(bad, 'index.js'), 'throw new Error("boom at import");\n');
    await fs.writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: 'host', private: true, dependencies: { 'broken-plugin': '*' } }));
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('reports the wasm backend, why, the tfjs version and the built-in plugins, and exits 0', () => {
    const r = runCli(['doctor', '--json'], { env: { MULTIMEDITRON_BACKEND: '' } });
    expect(r.status).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.ok).toBe(true);
    expect(rep.backend.backend).toBe('wasm');
    expect(rep.backend.reason).toMatch(/no native TensorFlow backend/);
    expect(rep.backend.tfjsVersion).toMatch(/^4\./);
    const names = rep.plugins.loaded.map((p: { name: string }) => p.name);
    expect(names).toEqual(expect.arrayContaining(['@multimeditron/plugin-image', '@multimeditron/plugin-audio']));
    expect(rep.duplicates).toEqual([]);
  });

  test('a plugin that throws at import is reported and doctor exits 1', () => {
    const r = runCli(['doctor'], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/FAILED\s+broken-plugin@9\.9\.9 \[import\] .*boom at import/);
    expect(r.stdout).toMatch(/PROBLEMS FOUND/);
  });

  test('asking for the tensorflow backend without tfjs-node says how to install it (exit 2)', () => {
    const r = runCli(['doctor'], { env: { MULTIMEDITRON_BACKEND: 'tensorflow' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/npm install @tensorflow\/tfjs-node-gpu/);
    expect(r.stderr).toMatch(/docs\/backends\.md/);
  });

  test('an unknown MULTIMEDITRON_BACKEND is a usage error', () => {
    const r = runCli(['doctor'], { env: { MULTIMEDITRON_BACKEND: 'cuda' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/not one of tensorflow, wasm, cpu/);
  });

  test('unknown commands and options exit 2', () => {
    expect(runCli(['no-such-command']).status).toBe(2);
    expect(runCli(['doctor', '--no-such-flag']).status).toBe(2);
    expect(runCli(['--help']).status).toBe(0);
  });
});
