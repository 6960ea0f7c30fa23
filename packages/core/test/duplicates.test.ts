import 'reflect-metadata';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { container } from 'tsyringe';
import * as core from '@multimeditron/core';
import { createMultimeditron, type Logger } from '@multimeditron/core';
import {
  detectDuplicateCopies, duplicatesIn, globalCopyStore, recordCopy, SINGLETONS_KEY, thisCopy, type CopyStore,
} from '../src/internal/duplicates.js';
import { configClass, DenseModality, DenseProcessor } from './helpers/toy.js';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';

const freshStore = (): CopyStore => ({ tfEngines: new Map(), containers: new Set(), cores: new Set() });
const otherCore = '/srv/app/node_modules/some-plugin/node_modules/@multimeditron/core/dist/internal/duplicates.js';

function memoryLogger(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  return { warnings, debug() {}, info() {}, warn: (m) => void warnings.push(m), error() {} };
}

afterEach(() => {
  delete (globalThis as unknown as Record<symbol, unknown>)[SINGLETONS_KEY];
});

test('one copy of each singleton is not reported, however often it records itself', () => {
  const store = freshStore();
  expect(detectDuplicateCopies(store)).toEqual([]);
  expect(detectDuplicateCopies(store)).toEqual([]);
  expect(thisCopy()).toMatchObject({ tfEngine: tf.engine, tfVersion: tf.version_core, container });
  expect(store.cores.size).toBe(1);
});

test('a simulated second copy of tfjs-core, tsyringe and core is reported with a fix', () => {
  const store = freshStore();
  recordCopy(store, { tfEngine: () => undefined, tfVersion: '4.21.0', container: {}, core: otherCore });
  const found = detectDuplicateCopies(store);
  expect(found.map((d) => d.package)).toEqual(['@tensorflow/tfjs-core', 'tsyringe', '@multimeditron/core']);
  expect(found[0]!.message).toContain(`2 copies of @tensorflow/tfjs-core are loaded (versions 4.21.0, ${tf.version_core})`);
  expect(found[0]!.message).toContain('npm ls @tensorflow/tfjs-core');
  expect(found[1]!.message).toContain('npm ls tsyringe');
  expect(found[2]!.message).toContain(otherCore);
  expect(found[2]!.message).toContain('instanceof fails across copies');
});

test('only the duplicated package is reported', () => {
  const store = freshStore();
  recordCopy(store, thisCopy());
  recordCopy(store, { ...thisCopy(), container: {} });
  expect(duplicatesIn(store).map((d) => d.package)).toEqual(['tsyringe']);
});

test('createMultimeditron reports duplicates from the process-wide store and logs each one', async () => {
  recordCopy(globalCopyStore(), { tfEngine: () => undefined, tfVersion: '4.0.0', container: {}, core: otherCore });
  const logger = memoryLogger();
  const mm = await createMultimeditron({ backend: false, plugins: [], logger });
  expect(mm.duplicates.map((d) => d.package)).toEqual(['@tensorflow/tfjs-core', 'tsyringe', '@multimeditron/core']);
  expect(logger.warnings).toEqual(mm.duplicates.map((d) => d.message));
});

test('without a second copy, createMultimeditron reports none', async () => {
  const mm = await createMultimeditron({ backend: false, plugins: [] });
  expect(mm.duplicates).toEqual([]);
});

test('a real second copy of core (the built dist/) is reported, and shares the registries through Symbol.for', async () => {
  // dist/ is the same code built by `tsc -b packages/core`; it imports the same tfjs-core and tsyringe
  const dist = (await import(pathToFileURL(path.join(REPO_ROOT, 'packages/core/dist/index.js')).href)) as typeof core;
  expect(dist.createMultimeditron).not.toBe(core.createMultimeditron);
  const fromDist = await dist.createMultimeditron({ backend: false, plugins: [], logger: memoryLogger() });
  expect(fromDist.duplicates).toEqual([]);
  const logger = memoryLogger();
  const fromSrc = await createMultimeditron({ backend: false, plugins: [], logger });
  expect(fromSrc.duplicates.map((d) => d.package)).toEqual(['@multimeditron/core']);
  expect(fromSrc.duplicates[0]!.message).toContain(path.join(REPO_ROOT, 'packages/core/dist/internal/duplicates.js'));

  // a class decorated by the other copy is registered in this copy's instance: same metadata keys, same catalogue
  class Shared extends DenseModality {}
  dist.RegisterModality('shared', { config: configClass('shared', 'signal'), processor: DenseProcessor })(Shared);
  fromSrc.register(Shared);
  expect(fromSrc.modalities.names()).toEqual(['shared']);
  expect(dist.catalogue()).toBe(core.catalogue());
  // the caveat: base classes differ between copies
  expect(dist.BaseModality).not.toBe(core.BaseModality);
});
