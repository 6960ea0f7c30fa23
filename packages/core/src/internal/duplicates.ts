/**
 * Detection of duplicate copies of the packages that must be singletons per process
 * (`@tensorflow/tfjs-core`, `tsyringe`, `@multimeditron/core`). Each copy of core records itself and the
 * tfjs-core instance it sees under a `Symbol.for` key; a second, different copy is reported.
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

const KEY = Symbol.for('multimeditron.singletons');

interface Seen {
  tfEngines: Set<unknown>;
  containers: Set<unknown>;
  cores: Set<string>;
}

const here = fileURLToPath(import.meta.url);

/** Records this copy's singletons and reports every package seen in more than one copy. */
export function detectDuplicateCopies(): DuplicateCopy[] {
  const g = globalThis as unknown as Record<symbol, Seen | undefined>;
  const seen = (g[KEY] ??= { tfEngines: new Set(), containers: new Set(), cores: new Set() });
  seen.tfEngines.add(tf.engine);
  seen.containers.add(container);
  seen.cores.add(here);
  const out: DuplicateCopy[] = [];
  if (seen.tfEngines.size > 1) {
    out.push({
      package: '@tensorflow/tfjs-core',
      message: `${seen.tfEngines.size} copies of @tensorflow/tfjs-core are loaded: backends and tensors will not be shared. ` +
        'Make it a peerDependency of every plugin and run `npm dedupe` (check with `npm ls @tensorflow/tfjs-core`).',
    });
  }
  if (seen.containers.size > 1) {
    out.push({
      package: 'tsyringe',
      message: `${seen.containers.size} copies of tsyringe are loaded: containers will not be shared. ` +
        'Make it a peerDependency of every plugin and run `npm dedupe` (check with `npm ls tsyringe`).',
    });
  }
  if (seen.cores.size > 1) {
    out.push({
      package: '@multimeditron/core',
      message: `${seen.cores.size} copies of @multimeditron/core are loaded (${[...seen.cores].join(', ')}). ` +
        'Registries are shared through Symbol.for keys, but make core a peerDependency of plugins.',
    });
  }
  return out;
}
