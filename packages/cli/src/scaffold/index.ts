/**
 * The plugin scaffold behind `multimeditron create-plugin`: validates the names, derives the class names
 * and dependency ranges, and writes a complete plugin package.
 * @module
 */
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { MultimeditronError, PLUGIN_API_VERSION } from '@multimeditron/core';
import * as t from './templates.js';

/** Options of {@link scaffoldPlugin}. */
export interface ScaffoldOptions {
  /** npm package name, e.g. `@acme/multimeditron-plugin-ecg`. */
  name: string;
  /** Target folder (default: the last segment of the name, in the current directory). */
  dir?: string;
  /** Dataset `type` the plugin handles (default `vector`). */
  modalityType?: string;
  /** Registry name of the modality (default `<modalityType>_linear`). */
  modelType?: string;
  /** Write into a folder that is not empty. */
  force?: boolean;
}

/** What {@link scaffoldPlugin} wrote. */
export interface ScaffoldResult {
  /** Absolute path of the package folder. */
  dir: string;
  /** Files written, relative to `dir`. */
  files: string[];
  /** The names used in the templates. */
  names: t.ScaffoldNames;
}

/** A bad `create-plugin` argument (exit code 2). */
export class ScaffoldError extends MultimeditronError {
  constructor(message: string, suggestions: string[] = []) {
    super('E_CONFIG', message, { suggestions });
  }
}

const NPM_NAME = /^(?:@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;
const IDENT = /^[a-z][a-z0-9_]*$/;

/** `ecg_lead` -> `EcgLead`. */
export function pascalCase(s: string): string {
  return s
    .split(/[^a-zA-Z0-9]+/)
    .filter(Boolean)
    .map((w) => w[0]!.toUpperCase() + w.slice(1))
    .join('');
}

function peerRanges(): Pick<t.ScaffoldNames, 'coreRange' | 'tfjsRange' | 'tsyringeRange' | 'reflectRange'> {
  const req = createRequire(import.meta.url);
  const core = req('@multimeditron/core/package.json') as { version: string; peerDependencies?: Record<string, string> };
  const peers = core.peerDependencies ?? {};
  return {
    coreRange: `^${core.version}`,
    tfjsRange: peers['@tensorflow/tfjs-core'] ?? '^4.22.0',
    tsyringeRange: peers['tsyringe'] ?? '^4.10.0',
    reflectRange: peers['reflect-metadata'] ?? '^0.2.2',
  };
}

/** Validates the options and derives every name the templates use. */
export function scaffoldNames(options: ScaffoldOptions): t.ScaffoldNames {
  const { name } = options;
  if (!NPM_NAME.test(name) || name.length > 214) {
    throw new ScaffoldError(`"${name}" is not a valid npm package name`, [
      'Use lower case letters, digits, "-", "." or "_", optionally with a scope: @acme/multimeditron-plugin-ecg',
    ]);
  }
  const modalityType = options.modalityType ?? 'vector';
  if (!IDENT.test(modalityType)) {
    throw new ScaffoldError(`--modality-type "${modalityType}" must match ${IDENT} (it is the dataset "type" and part of the loader names)`);
  }
  const modelType = options.modelType ?? `${modalityType}_linear`;
  if (!IDENT.test(modelType)) throw new ScaffoldError(`--model-type "${modelType}" must match ${IDENT}`);
  return { packageName: name, modalityType, modelType, className: pascalCase(modalityType), apiVersion: PLUGIN_API_VERSION, ...peerRanges() };
}

/** Writes a new plugin package. Refuses a non-empty folder unless `force`. */
export async function scaffoldPlugin(options: ScaffoldOptions, cwd = process.cwd()): Promise<ScaffoldResult> {
  const names = scaffoldNames(options);
  const dir = path.resolve(cwd, options.dir ?? names.packageName.split('/').pop()!);
  const existing = await fs.readdir(dir).catch(() => undefined);
  if (existing && existing.length > 0 && !options.force) {
    throw new ScaffoldError(`${dir} exists and is not empty`, ['Choose another --dir, or pass --force to write into it.']);
  }
  const files: Record<string, string> = {
    'package.json': t.packageJson(names),
    'tsconfig.json': t.tsconfig(),
    'tsconfig.test.json': t.tsconfigTest(),
    '.gitignore': t.gitignore(),
    'README.md': t.readme(names),
    'src/index.ts': t.indexTs(names),
    'src/config.ts': t.configTs(names),
    'src/loaders.ts': t.loadersTs(names),
    'src/processor.ts': t.processorTs(names),
    'src/modality.ts': t.modalityTs(names),
    'test/plugin.test.ts': t.testTs(names),
  };
  for (const [rel, text] of Object.entries(files)) {
    const file = path.join(dir, rel);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, text);
  }
  return { dir, files: Object.keys(files), names };
}
