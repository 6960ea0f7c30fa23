/**
 * Throwaway plugin packages for the plugin tests: real folders with a package.json (`"type": "module"`, the
 * `"multimeditron"` field) and plain ESM `.js` entry files, loaded by a real dynamic import.
 *
 * The entry files import `@multimeditron/core` (jest's moduleNameMapper sends that to packages/core/src, for
 * dynamically imported files too, so a plugin sees the very same core as the test) and
 * `@tensorflow/tfjs-core`, which resolves through a symlink `<tmp>/node_modules/@tensorflow/tfjs-core` to the
 * repository's single copy.
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../../../../test/helpers/fixtures.js';

/** A package.json body. */
export type PackageJson = Record<string, unknown>;

/** Writes `files` (relative path -> text) and `package.json` into `dir`. */
export async function writePackage(dir: string, pkg: PackageJson, files: Record<string, string> = {}): Promise<string> {
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  for (const [rel, text] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await fs.writeFile(path.join(dir, rel), text);
  }
  return dir;
}

/** Symlinks `node_modules/<name>` in `dir` to `target`. */
export async function linkPackage(dir: string, name: string, target: string): Promise<void> {
  const link = path.join(dir, 'node_modules', name);
  await fs.mkdir(path.dirname(link), { recursive: true });
  await fs.symlink(target, link, 'dir');
}

/** A temporary folder whose node_modules shares the repository's tfjs-core. */
export async function makeSandbox(prefix: string): Promise<{ root: string; cleanup: () => Promise<void> }> {
  const root = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), prefix)));
  await linkPackage(root, '@tensorflow/tfjs-core', path.join(REPO_ROOT, 'node_modules', '@tensorflow', 'tfjs-core'));
  return { root, cleanup: () => fs.rm(root, { recursive: true, force: true }) };
}

/** The `multimeditron` field of a plugin package.json. */
export function pluginField(apiVersion: unknown = 1): PackageJson {
  return { multimeditron: { plugin: true, apiVersion } };
}

/** A plugin package.json. */
export function pluginPackage(name: string, version: string, extra: PackageJson = {}): PackageJson {
  return { name, version, type: 'module', main: 'index.js', ...pluginField(), ...extra };
}

/**
 * Source of a toy plugin in plain ESM JavaScript (no decorator syntax: the decorators are called directly).
 *
 * - `fs-<type>` loader: reads a text file of whitespace-separated numbers into a Float32Array.
 * - processor: `tokens x inputDim` numbers -> HostTensor [tokens, inputDim], numEmbeddings = tokens.
 * - modality `<name>`: encoder = one tf.Variable [inputDim, featureDim] (seeded), projector = core's `linear`.
 */
export function toyPluginSource(opts: { plugin: string; version: string; name: string; type: string; apiVersion?: number }): string {
  const cls = opts.name.replace(/(^|_)(\w)/g, (_, __, c: string) => c.toUpperCase());
  return `
import { readFile } from 'node:fs/promises';
import * as tf from '@tensorflow/tfjs-core';
import {
  BASE_MODALITY_CONFIG_SCHEMA, BaseModality, BaseModalityConfig, BaseModalityLoader, BaseModalityProcessor,
  createProjector, definePlugin, extendSchema, hostTensor, InputError, RegisterLoader, RegisterModality,
} from '@multimeditron/core';

export class ${cls}Config extends BaseModalityConfig {
  static schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: {
      modelType: { const: '${opts.name}', default: '${opts.name}' },
      modalityType: { const: '${opts.type}', default: '${opts.type}' },
      inputDim: { type: 'integer', minimum: 1, default: 3 },
      featureDim: { type: 'integer', minimum: 1, default: 4 },
      tokens: { type: 'integer', minimum: 1, default: 2 },
      seed: { type: 'integer', default: 7 },
    },
  });
}

export class Fs${cls}Loader extends BaseModalityLoader {
  async load(modality) {
    const file = this.resolvePath(modality.value);
    let text;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new InputError(String(modality.value), 'cannot read: ' + e.message);
    }
    const numbers = text.trim().split(/\\s+/).map(Number);
    if (numbers.some((n) => Number.isNaN(n))) throw new InputError(String(modality.value), 'not a list of numbers');
    return Float32Array.from(numbers);
  }
}
RegisterLoader('fs-${opts.type}', { modalityType: '${opts.type}' })(Fs${cls}Loader);

export class ${cls}Processor extends BaseModalityProcessor {
  inputName = '${opts.type}_values';
  process(modality) {
    const { tokens, inputDim } = this.config;
    if (modality.value.length !== tokens * inputDim) {
      throw new InputError('<${opts.type}>', 'expected ' + tokens * inputDim + ' numbers, got ' + modality.value.length);
    }
    return { type: modality.type, value: hostTensor(Float32Array.from(modality.value), [tokens, inputDim]), numEmbeddings: tokens };
  }
}

export class ${cls}Modality extends BaseModality {
  async load() {
    const { inputDim, featureDim, hiddenSize, seed } = this.config;
    const init = tf.randomUniform([inputDim, featureDim], -1, 1, 'float32', seed);
    this.encoder = tf.variable(init, false);
    init.dispose();
    this.projector = createProjector({ type: 'linear', inputDim: featureDim, outputDim: hiddenSize, seed: seed + 1 });
    this.processor = new ${cls}Processor(this.config);
  }
  embedBatch(batch) {
    const [b, n, d] = batch.shape;
    const features = tf.reshape(tf.matMul(tf.reshape(batch, [b * n, d]), this.encoder), [b, n, this.config.featureDim]);
    return this.projector.apply(features);
  }
  encoderVariables() {
    return new Map([['encoder.weight', this.encoder]]);
  }
}
RegisterModality('${opts.name}', { config: ${cls}Config, processor: ${cls}Processor })(${cls}Modality);

export default definePlugin({
  name: '${opts.plugin}',
  version: '${opts.version}',
  apiVersion: ${opts.apiVersion ?? 1},
  modalities: [${cls}Modality],
  loaders: [Fs${cls}Loader],
});
`;
}

/** Writes a toy plugin package into `dir`. */
export async function writeToyPlugin(
  dir: string,
  opts: { plugin: string; version: string; name: string; type: string; apiVersion?: number; exportsMap?: boolean },
): Promise<string> {
  const src = toyPluginSource(opts);
  if (opts.exportsMap) {
    // entry through an "exports" map with conditions, as built packages have
    return writePackage(dir, {
      name: opts.plugin, version: opts.version, type: 'module',
      exports: { '.': { types: './dist/index.d.ts', import: './dist/index.js' }, './package.json': './package.json' },
      ...pluginField(),
    }, { 'dist/index.js': src });
  }
  return writePackage(dir, pluginPackage(opts.plugin, opts.version), { 'index.js': src });
}
