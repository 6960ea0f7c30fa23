/**
 * Detection of duplicate copies of the packages that must be singletons per process
 * (`@tensorflow/tfjs-core`, `tsyringe`, `@multimeditron/core`). Each copy of core records itself and the
 * tfjs-core and tsyringe instances it sees in a store kept under a `Symbol.for` key on `globalThis`, which
 * every copy of core finds; a package seen through more than one instance is reported.
 * @internal
 * @module
 */
import * as tf from '@tensorflow/tfjs-core';
import { container } from 'tsyringe';
import { fileURLToPath } from 'node:url';

/** One duplicate copy found. */
export interface DuplicateCopy {
  package: '@tensorflow/tfjs-core' | 'tsyringe' | '@multimeditron/core';
  message: string;
}

/** What one copy of core sees: the identity of each singleton package it imported. */
export interface CopyRecord {
  /** tfjs-core's `engine` function (one per copy of tfjs-core). */
  tfEngine: unknown;
  /** The version of that tfjs-core copy. */
  tfVersion: string;
  /** tsyringe's root container (one per copy of tsyringe). */
  container: unknown;
  /** The file of this copy of core. */
  core: string;
}

/** Where the copies record themselves. */
export interface CopyStore {
  tfEngines: Map<unknown, string>;
  containers: Set<unknown>;
  cores: Set<string>;
}

/** The `globalThis` key of the process-wide store. */
export const SINGLETONS_KEY = Symbol.for('multimeditron.singletons');

/** The process-wide store, shared by every copy of core. */
export function globalCopyStore(): CopyStore {
  const g = globalThis as unknown as Record<symbol, CopyStore | undefined>;
  return (g[SINGLETONS_KEY] ??= { tfEngines: new Map(), containers: new Set(), cores: new Set() });
}

/** What this copy of core sees. */
export function thisCopy(): CopyRecord {
  return { tfEngine: tf.engine, tfVersion: tf.version_core, container, core: fileURLToPath(import.meta.url) };
}

/** Adds a copy's singletons to a store. */
export function recordCopy(store: CopyStore, copy: CopyRecord): void {
  store.tfEngines.set(copy.tfEngine, copy.tfVersion);
  store.containers.add(copy.container);
  store.cores.add(copy.core);
}

/** Every package of the store seen through more than one instance. */
export function duplicatesIn(store: CopyStore): DuplicateCopy[] {
  const out: DuplicateCopy[] = [];
  if (store.tfEngines.size > 1) {
    out.push({
      package: '@tensorflow/tfjs-core',
      message: `${store.tfEngines.size} copies of @tensorflow/tfjs-core are loaded (versions ${[...store.tfEngines.values()].join(', ')}): ` +
        'tensors made by one copy fail the other\'s instanceof checks and ops. ' +
        'Make it a peerDependency of every plugin and run `npm dedupe` (check with `npm ls @tensorflow/tfjs-core`).',
    });
  }
  if (store.containers.size > 1) {
    out.push({
      package: 'tsyringe',
      message: `${store.containers.size} copies of tsyringe are loaded: containers and tokens will not be shared. ` +
        'Make it a peerDependency of every plugin and run `npm dedupe` (check with `npm ls tsyringe`).',
    });
  }
  if (store.cores.size > 1) {
    out.push({
      package: '@multimeditron/core',
      message: `${store.cores.size} copies of @multimeditron/core are loaded (${[...store.cores].join(', ')}). ` +
        'Registries are shared through Symbol.for keys, but base classes differ (instanceof fails across copies): ' +
        'make core a peerDependency of plugins and run `npm dedupe`.',
    });
  }
  return out;
}

/** Records this copy's singletons in `store` (default: the process-wide one) and reports every duplicate. */
export function detectDuplicateCopies(store: CopyStore = globalCopyStore()): DuplicateCopy[] {
  recordCopy(store, thisCopy());
  return duplicatesIn(store);
}
