/**
 * The files `create-plugin` writes. Each template is a function of the {@link ScaffoldNames}; the generated
 * code is a small but complete plugin: a numeric-vector modality whose vector is cut into `numTokens`
 * segments, each embedded by a Linear layer + GELU and projected to the LLM hidden size.
 * @internal
 * @module
 */

/** Everything the templates need, derived from the command's arguments. */
export interface ScaffoldNames {
  /** npm package name. */
  packageName: string;
  /** Dataset `type` handled (`vector`, `ecg`, ...). */
  modalityType: string;
  /** Registry name of the modality (the config's `modelType`). */
  modelType: string;
  /** PascalCase prefix of the class names (`Vector`, `Ecg`, ...). */
  className: string;
  /** Version range of `@multimeditron/core` to depend on. */
  coreRange: string;
  /** Version ranges of the other peers. */
  tfjsRange: string;
  tsyringeRange: string;
  reflectRange: string;
  /** Plugin API version declared in package.json and the manifest. */
  apiVersion: number;
}

export function packageJson(n: ScaffoldNames): string {
  const peers = {
    '@multimeditron/core': n.coreRange,
    '@tensorflow/tfjs-core': n.tfjsRange,
    'reflect-metadata': n.reflectRange,
    tsyringe: n.tsyringeRange,
  };
  const pkg = {
    name: n.packageName,
    version: '0.1.0',
    description: `MultiMeditron.ts plugin: the "${n.modalityType}" modality (${n.modelType})`,
    license: 'UNLICENSED',
    type: 'module',
    main: './dist/index.js',
    types: './dist/index.d.ts',
    exports: {
      '.': { types: './dist/index.d.ts', import: './dist/index.js' },
      './package.json': './package.json',
    },
    files: ['dist', 'README.md'],
    engines: { node: '>=20.19' },
    sideEffects: true,
    keywords: ['multimeditron', 'multimeditron-plugin', n.modalityType],
    multimeditron: { plugin: true, apiVersion: n.apiVersion },
    scripts: {
      build: 'tsc -p tsconfig.json',
      test: 'tsc -p tsconfig.test.json && node --test build-test/test/',
      prepack: 'npm run build',
    },
    peerDependencies: peers,
    devDependencies: { ...peers, '@types/node': '^20.19.0', typescript: '~5.9.0' },
  };
  return `${JSON.stringify(pkg, null, 2)}\n`;
}

const COMPILER_OPTIONS = {
  target: 'ES2022',
  lib: ['ES2023'],
  module: 'NodeNext',
  moduleResolution: 'NodeNext',
  strict: true,
  noImplicitOverride: true,
  experimentalDecorators: true,
  emitDecoratorMetadata: true,
  declaration: true,
  sourceMap: true,
  esModuleInterop: true,
  skipLibCheck: true,
  forceConsistentCasingInFileNames: true,
  types: ['node'],
};

export function tsconfig(): string {
  return `${JSON.stringify({ compilerOptions: { ...COMPILER_OPTIONS, rootDir: 'src', outDir: 'dist' }, include: ['src'] }, null, 2)}\n`;
}

export function tsconfigTest(): string {
  return `${JSON.stringify(
    { extends: './tsconfig.json', compilerOptions: { rootDir: '.', outDir: 'build-test', declaration: false }, include: ['src', 'test'] },
    null,
    2,
  )}\n`;
}

export function gitignore(): string {
  return 'node_modules/\ndist/\nbuild-test/\n*.tgz\n';
}

export function indexTs(n: ScaffoldNames): string {
  return `/**
 * ${n.packageName}: a MultiMeditron.ts plugin for the "${n.modalityType}" modality.
 * @packageDocumentation
 */
import 'reflect-metadata';
import { definePlugin } from '@multimeditron/core';
import { Fs${n.className}Loader, Raw${n.className}Loader } from './loaders.js';
import { ${n.className}Modality } from './modality.js';

export * from './config.js';
export * from './loaders.js';
export * from './modality.js';
export * from './processor.js';

/** The manifest a host reads when it loads this package. */
export default definePlugin({
  name: '${n.packageName}',
  version: '0.1.0',
  apiVersion: ${n.apiVersion},
  modalities: [${n.className}Modality],
  loaders: [Fs${n.className}Loader, Raw${n.className}Loader],
});
`;
}

export function configTs(n: ScaffoldNames): string {
  return `/**
 * ${n.className}Config: configures both the processor and the modality.
 * @module
 */
import {
  BASE_MODALITY_CONFIG_SCHEMA, BaseModalityConfig, ConfigValidationError, extendSchema, type ModalityConfigJSON,
} from '@multimeditron/core';

/** Registry name of the modality (the config's \`modelType\`). */
export const MODEL_TYPE = '${n.modelType}';
/** The dataset \`type\` this plugin handles. */
export const MODALITY_TYPE = '${n.modalityType}';

/** The JSON form of a {@link ${n.className}Config}. */
export interface ${n.className}ConfigJSON extends ModalityConfigJSON {
  inputDim: number;
  numTokens: number;
  embedDim: number;
  normalize: boolean;
  projectionType: 'mlp' | 'linear';
  seed: number;
}

/**
 * A vector of \`inputDim\` numbers is cut into \`numTokens\` equal segments; each segment becomes one token.
 */
export class ${n.className}Config extends BaseModalityConfig {
  /** JSON Schema of the config: the base fields plus this modality's, with defaults. */
  static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: {
      modelType: { const: MODEL_TYPE, default: MODEL_TYPE },
      modalityType: { const: MODALITY_TYPE, default: MODALITY_TYPE },
      inputDim: { type: 'integer', minimum: 1, default: 16 },
      numTokens: { type: 'integer', minimum: 1, default: 4 },
      embedDim: { type: 'integer', minimum: 1, default: 32 },
      normalize: { type: 'boolean', default: true },
      projectionType: { enum: ['mlp', 'linear'], default: 'mlp' },
      seed: { type: 'integer', minimum: 0, default: 0 },
    },
  });

  /** Length of every input vector. */
  declare inputDim: number;
  /** Tokens (segments) per vector. */
  declare numTokens: number;
  /** Size of a segment's embedding (the projector's input). */
  declare embedDim: number;
  /** Standardise each vector to zero mean and unit variance. */
  declare normalize: boolean;
  /** Projector to the LLM hidden size. */
  declare projectionType: 'mlp' | 'linear';
  /** Seed of the initial weights. */
  declare seed: number;

  constructor(values: Partial<${n.className}ConfigJSON> = {}) {
    super(values);
    if (this.inputDim % this.numTokens !== 0) {
      throw new ConfigValidationError(new.target.name, [
        { path: '/numTokens', rule: 'multipleOf', message: 'inputDim (' + this.inputDim + ') must be a multiple of numTokens (' + this.numTokens + ')' },
      ]);
    }
  }

  /** Values per token. */
  segmentSize(): number {
    return this.inputDim / this.numTokens;
  }
}
`;
}

export function loadersTs(n: ScaffoldNames): string {
  return `/**
 * Loaders for the "${n.modalityType}" modality type. Both return a Float32Array.
 * @module
 */
import { promises as fs } from 'node:fs';
import { BaseModalityLoader, InputError, RegisterLoader, type ModalityInput } from '@multimeditron/core';
import { MODALITY_TYPE } from './config.js';

/** Parses numbers from a JSON array or from text separated by commas, spaces or newlines. */
export function parseVector(value: unknown, source: string): Float32Array {
  if (value instanceof Float32Array) return value.slice();
  if (ArrayBuffer.isView(value) && !(value instanceof DataView) && !(value instanceof BigInt64Array) && !(value instanceof BigUint64Array)) {
    return Float32Array.from(value as unknown as ArrayLike<number>);
  }
  let items: unknown[];
  if (Array.isArray(value)) {
    items = value;
  } else if (typeof value === 'string') {
    const text = value.trim();
    if (text.startsWith('[')) {
      try {
        items = JSON.parse(text) as unknown[];
      } catch (e) {
        throw new InputError(source, 'not valid JSON: ' + (e as Error).message, { cause: e });
      }
      if (!Array.isArray(items)) throw new InputError(source, 'expected a JSON array of numbers');
    } else {
      items = text.length ? text.split(/[\\s,;]+/) : [];
    }
  } else {
    throw new InputError(source, 'expected an array of numbers, a typed array or a string of numbers');
  }
  const out = new Float32Array(items.length);
  for (let i = 0; i < items.length; i++) {
    const v = typeof items[i] === 'string' ? Number(items[i]) : items[i];
    if (typeof v !== 'number' || Number.isNaN(v)) throw new InputError(source, 'item ' + i + ' is not a number: ' + JSON.stringify(items[i]));
    out[i] = v;
  }
  return out;
}

/** Reads a vector from a \`.json\`, \`.csv\` or \`.txt\` file under \`basePath\`. */
@RegisterLoader('fs-${n.modalityType}', { modalityType: MODALITY_TYPE })
export class Fs${n.className}Loader extends BaseModalityLoader<Float32Array> {
  /** Reads and parses one file. */
  async load(modality: ModalityInput): Promise<Float32Array> {
    if (typeof modality.value !== 'string') throw new InputError(String(modality.value), 'expected a path string');
    const file = this.resolvePath(modality.value);
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (e) {
      throw new InputError(modality.value, 'cannot read: ' + (e as Error).message, { cause: e });
    }
    return parseVector(text, modality.value);
  }
}

/** Takes a vector held in memory: a number array, a typed array or a string of numbers. */
@RegisterLoader('raw-${n.modalityType}', { modalityType: MODALITY_TYPE })
export class Raw${n.className}Loader extends BaseModalityLoader<Float32Array> {
  /** Converts one value. */
  async load(modality: ModalityInput): Promise<Float32Array> {
    return parseVector(modality.value, '<value>');
  }
}
`;
}

export function processorTs(n: ScaffoldNames): string {
  return `/**
 * ${n.className}Processor: a vector to the encoder input [numTokens, segmentSize]. Runs on the CPU and never
 * touches the tfjs backend, so it can run in a worker thread.
 * @module
 */
import {
  BaseModalityProcessor, hostTensor, InputError, type ModalityInput, type ProcessedModality,
} from '@multimeditron/core';
import type { ${n.className}Config } from './config.js';

/** Checks length and finiteness, optionally standardises, and reshapes to [numTokens, segmentSize]. */
export class ${n.className}Processor extends BaseModalityProcessor<Float32Array, ${n.className}Config> {
  /** Name of the encoder input (used by the \`features\` command). */
  override readonly inputName: string = 'input_values';

  /** Processes one loaded vector. Throws an InputError on a wrong length or a non-finite value. */
  process(modality: ModalityInput<Float32Array>): ProcessedModality {
    const source = typeof modality['source'] === 'string' ? modality['source'] : '<value>';
    const x = modality.value;
    const c = this.config;
    if (!(x instanceof Float32Array)) throw new InputError(source, 'expected a Float32Array (load it with fs-${n.modalityType} or raw-${n.modalityType})');
    if (x.length !== c.inputDim) throw new InputError(source, 'expected ' + c.inputDim + ' values, got ' + x.length);
    const bad = x.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw new InputError(source, 'value ' + bad + ' is not finite (' + x[bad] + ')');
    const out = x.slice();
    if (c.normalize) {
      const mean = out.reduce((a, b) => a + b, 0) / out.length;
      const sd = Math.sqrt(out.reduce((a, b) => a + (b - mean) ** 2, 0) / out.length);
      for (let i = 0; i < out.length; i++) out[i] = sd > 0 ? (out[i]! - mean) / sd : 0;
    }
    return { type: modality.type, value: hostTensor(out, [c.numTokens, c.segmentSize()]), numEmbeddings: c.numTokens };
  }
}
`;
}

export function modalityTs(n: ScaffoldNames): string {
  return `/**
 * ${n.className}Modality (\`${n.modelType}\`): a Linear encoder applied to each segment, GELU, then the projector.
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { BaseModality, createProjector, gelu, linear, RegisterModality, ShapeError } from '@multimeditron/core';
import { ${n.className}Config, MODEL_TYPE } from './config.js';
import { ${n.className}Processor } from './processor.js';

/**
 * The modality. Its encoder weights start from \`config.seed\` (PyTorch's default Linear initialisation);
 * \`savePretrained(dir, { includeEncoder: true })\` saves them with the projector.
 */
@RegisterModality(MODEL_TYPE, { config: ${n.className}Config, processor: ${n.className}Processor })
export class ${n.className}Modality extends BaseModality<${n.className}Config, ${n.className}Processor> {
  private weight: tf.Variable | undefined;
  private bias: tf.Variable | undefined;

  /** Builds the processor, the encoder (frozen) and the projector (trainable). */
  protected async load(): Promise<void> {
    const c = this.config;
    this.processor = new ${n.className}Processor(c);
    await this.processor.init(this.ctx);
    const bound = 1 / Math.sqrt(c.segmentSize());
    // tf.variable copies its initial value: dispose the initial tensors so nothing leaks.
    const w0 = tf.randomUniform([c.embedDim, c.segmentSize()], -bound, bound, 'float32', c.seed);
    const b0 = tf.randomUniform([c.embedDim], -bound, bound, 'float32', c.seed + 1);
    this.weight = tf.variable(w0, false);
    this.bias = tf.variable(b0, false);
    tf.dispose([w0, b0]);
    this.projector = createProjector({ type: c.projectionType, inputDim: c.embedDim, outputDim: c.hiddenSize, seed: c.seed + 2 });
  }

  /** The encoder's weights under their checkpoint names. */
  encoderVariables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    if (this.weight) out.set('encoder.weight', this.weight);
    if (this.bias) out.set('encoder.bias', this.bias);
    return out;
  }

  private encode(batch: tf.Tensor): tf.Tensor3D {
    const c = this.config;
    if (batch.rank !== 3 || batch.shape[1] !== c.numTokens || batch.shape[2] !== c.segmentSize()) {
      throw new ShapeError(MODEL_TYPE + ': expected [batch, ' + c.numTokens + ', ' + c.segmentSize() + '], got [' + batch.shape.join(', ') + ']');
    }
    return tf.tidy(() => gelu(linear(batch, this.weight!, this.bias!)) as tf.Tensor3D);
  }

  /** [b, numTokens, segmentSize] -> [b, numTokens, hiddenSize]. */
  protected embedBatch(batch: tf.Tensor): tf.Tensor3D {
    return tf.tidy(() => this.projector.apply(this.encode(batch)));
  }

  /** The encoder output before the projector, as \`last_hidden_state\`. */
  override encodeFeatures(batch: tf.Tensor): Record<string, tf.Tensor> {
    return { last_hidden_state: this.encode(batch) };
  }
}
`;
}

export function testTs(n: ScaffoldNames): string {
  return `import 'reflect-metadata';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { createMultimeditron, InputError, selectBackend, type Multimeditron } from '@multimeditron/core';
import plugin, { ${n.className}Modality } from '../src/index.js';

let mm: Multimeditron;
let dir: string;
before(async () => {
  await selectBackend({ backend: 'wasm' });
  mm = await createMultimeditron({ plugins: [plugin], backend: false, strict: true });
  dir = await mkdtemp(path.join(os.tmpdir(), '${n.modalityType}-plugin-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const vector = Array.from({ length: 16 }, (_, i) => Math.sin(i));

test('the manifest registers the modality and both loaders', () => {
  assert.deepEqual(mm.modalities.names(), ['${n.modelType}']);
  assert.deepEqual(mm.loaders.forModalityType('${n.modalityType}').sort(), ['fs-${n.modalityType}', 'raw-${n.modalityType}']);
});

test('load -> process -> forward gives [batch, numTokens, hiddenSize] without leaking tensors', async () => {
  const modality = await mm.modalities.fromPretrained('${n.modelType}', { hiddenSize: 24 });
  try {
    assert.equal(modality.constructor, ${n.className}Modality);
    await writeFile(path.join(dir, 'a.json'), JSON.stringify(vector));
    await writeFile(path.join(dir, 'b.csv'), vector.map((v) => v * 2 + 1).join(','));
    const fsLoader = mm.loaders.create('fs-${n.modalityType}', { basePath: dir });
    const inputs = [];
    for (const file of ['a.json', 'b.csv']) {
      const raw = await fsLoader.load({ type: '${n.modalityType}', value: file });
      inputs.push(...modality.processor.processAll({ type: '${n.modalityType}', value: raw }));
    }
    assert.deepEqual(inputs.map((p) => p.numEmbeddings), [4, 4]);
    const before = tf.memory().numTensors;
    const out = modality.forward(inputs.map((p) => p.value));
    assert.deepEqual(out.shape, [2, 4, 24]);
    const values = out.dataSync();
    out.dispose();
    assert.equal(tf.memory().numTensors, before);
    // standardisation makes the two inputs (an affine map of each other) embed identically
    for (let i = 0; i < values.length / 2; i++) assert.ok(Math.abs(values[i]! - values[i + values.length / 2]!) < 1e-4);
  } finally {
    modality.dispose();
  }
});

test('bad input is an InputError, never a crash', async () => {
  const modality = await mm.modalities.fromPretrained('${n.modelType}', { hiddenSize: 8 });
  try {
    const raw = mm.loaders.create('raw-${n.modalityType}');
    const short = await raw.load({ type: '${n.modalityType}', value: [1, 2, 3] });
    assert.throws(() => modality.processor.processAll({ type: '${n.modalityType}', value: short }), InputError);
    const nan = await raw.load({ type: '${n.modalityType}', value: vector.map((v, i) => (i === 3 ? Infinity : v)) });
    assert.throws(() => modality.processor.processAll({ type: '${n.modalityType}', value: nan }), InputError);
    await assert.rejects(raw.load({ type: '${n.modalityType}', value: 'one two' }), InputError);
    await assert.rejects(mm.loaders.create('fs-${n.modalityType}', { basePath: dir }).load({ type: '${n.modalityType}', value: '../x.json' }), InputError);
  } finally {
    modality.dispose();
  }
});

test('savePretrained + fromPretrained round-trips the weights', async () => {
  const a = await mm.modalities.fromPretrained('${n.modelType}', { hiddenSize: 8, seed: 5 });
  const [x] = a.processor.processAll({ type: '${n.modalityType}', value: Float32Array.from(vector) });
  const ya = a.forward([x!.value]);
  const expected = Array.from(ya.dataSync());
  ya.dispose();
  const saved = path.join(dir, 'saved');
  await a.savePretrained(saved, { includeEncoder: true });
  a.dispose();
  const b = await mm.modalities.fromPretrained(saved);
  const yb = b.forward([x!.value]);
  assert.deepEqual(Array.from(yb.dataSync()), expected);
  yb.dispose();
  b.dispose();
});
`;
}

export function readme(n: ScaffoldNames): string {
  return `# ${n.packageName}

A MultiMeditron.ts plugin for the \`${n.modalityType}\` modality,
generated by \`multimeditron create-plugin\`.

| piece | name |
|---|---|
| modality (config \`modelType\`) | \`${n.modelType}\` (\`${n.className}Modality\`, \`${n.className}Config\`, \`${n.className}Processor\`) |
| loaders | \`fs-${n.modalityType}\` (a .json/.csv/.txt file under \`basePath\`), \`raw-${n.modalityType}\` (numbers in memory) |
| dataset \`type\` | \`${n.modalityType}\` |

The starting point is a small, working modality: a vector of \`inputDim\` numbers (default 16) is checked,
standardised and cut into \`numTokens\` segments (default 4); each segment is embedded by a Linear layer and
GELU (\`embedDim\`, default 32) and projected to the LLM's \`hiddenSize\` by core's projector. Replace the
loader, processor and encoder with your own; keep the file layout.

## Develop

\`\`\`bash
npm install
npm run build     # tsc -> dist/
npm test          # compiles src + test to build-test/ and runs node --test
\`\`\`

## Use from a host

Add the package to the host's \`dependencies\` (plugins are discovered from there, or list them in the host's
package.json under \`"multimeditron": { "plugins": ["${n.packageName}"] }\`), then:

\`\`\`ts
import 'reflect-metadata';
import { createMultimeditron } from '@multimeditron/core';

const mm = await createMultimeditron();
const modality = await mm.modalities.fromPretrained('${n.modelType}', { hiddenSize: 4096 });
const raw = await mm.loaders.create('fs-${n.modalityType}', { basePath: './data' }).load({ type: '${n.modalityType}', value: 'sample.json' });
const [processed] = modality.processor.processAll({ type: '${n.modalityType}', value: raw });
const embeddings = modality.forward([processed!.value]); // [1, numTokens, 4096]
\`\`\`

\`multimeditron doctor\` and \`multimeditron plugins\` show whether the host sees the plugin.

## Rules that keep a plugin working

- \`@multimeditron/core\`, \`@tensorflow/tfjs-core\`, \`tsyringe\` and \`reflect-metadata\` are **peer**
  dependencies: the host provides one copy of each. A second copy of tfjs-core has its own backends and
  tensors; \`multimeditron doctor\` reports duplicates.
- \`package.json\` keeps \`"multimeditron": { "plugin": true, "apiVersion": ${n.apiVersion} }\`, and the entry module's
  default export is the \`definePlugin({...})\` manifest.
- Bad input throws core's \`InputError\` naming the file, so that one bad sample never stops a batch.

## Publish

\`\`\`bash
npm pack --dry-run   # check that dist/ and README.md are in, and nothing else
npm publish
\`\`\`
`;
}
