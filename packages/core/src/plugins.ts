/**
 * Plugin discovery and loading, after oclif: an explicit list, resolved from the host's root, each plugin
 * loaded in its own try/catch so that a broken one becomes a {@link PluginLoadError} in the report.
 *
 * Which plugins: the list passed by the host (option or run config); else the host package.json's
 * `"multimeditron": { "plugins": [...] }`; else every `dependencies`/`optionalDependencies` entry of the host
 * whose package.json carries `"multimeditron": { "plugin": true }`.
 * @module
 */
import { promises as fs, realpathSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { MANIFEST_FIELD, PLUGIN_API_VERSION } from './constants.js';
import { MultimeditronError, PluginLoadError } from './errors.js';
import type { LoaderClass } from './loader.js';
import type { ModalityClass } from './modality.js';

/** What a plugin's entry module exports (as `default` or `plugin`). */
export interface PluginManifest {
  /** Package name. */
  name: string;
  /** Package version (informational; the package.json's wins in reports). */
  version?: string;
  /** Plugin API version the plugin was written for; must equal {@link PLUGIN_API_VERSION}. */
  apiVersion: number;
  /** Classes decorated with `@RegisterModality`. */
  modalities?: ModalityClass[];
  /** Classes decorated with `@RegisterLoader`. */
  loaders?: LoaderClass[];
  /**
   * Decoder families (classes decorated with `@RegisterLanguageModel` from `@multimeditron/llm`). Core does not
   * use them; the llm package's registry picks them up.
   */
  languageModels?: Array<abstract new (...args: never[]) => unknown>;
}

/** Declares a plugin manifest (identity function with type checking). */
export function definePlugin(manifest: PluginManifest): PluginManifest {
  return manifest;
}

/** The `multimeditron` field of a plugin's package.json. */
export interface PluginPackageField {
  plugin: true;
  apiVersion: number;
}

/** A plugin that loaded. */
export interface LoadedPlugin {
  name: string;
  version: string | undefined;
  /** Package folder (undefined for in-memory manifests). */
  root: string | undefined;
  manifest: PluginManifest;
  modalities: string[];
  loaders: string[];
}

/** Outcome of loading the plugins of one instance. */
export interface PluginReport {
  /** Where the list came from. */
  source: 'option' | 'host-package' | 'dependencies' | 'none';
  loaded: LoadedPlugin[];
  errors: PluginLoadError[];
}

interface PackageJson {
  name?: string;
  version?: string;
  main?: string;
  module?: string;
  exports?: unknown;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  [MANIFEST_FIELD]?: { plugin?: boolean; apiVersion?: unknown; plugins?: unknown };
}

async function readPackageJson(file: string): Promise<PackageJson> {
  return JSON.parse(await fs.readFile(file, 'utf8')) as PackageJson;
}

/** Finds `spec`'s package folder the way Node does: `node_modules/<spec>` in `from` and its ancestors. */
export async function findPackageRoot(spec: string, from: string): Promise<string | undefined> {
  if (spec.startsWith('.') || path.isAbsolute(spec)) {
    const dir = path.resolve(from, spec);
    return (await fs.access(path.join(dir, 'package.json')).then(() => true, () => false)) ? dir : undefined;
  }
  let dir = path.resolve(from);
  for (;;) {
    const cand = path.join(dir, 'node_modules', spec);
    if (await fs.access(path.join(cand, 'package.json')).then(() => true, () => false)) return realpathSync(cand);
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** Conditions an `import()` from Node matches, as Node applies them. */
const IMPORT_CONDITIONS: ReadonlySet<string> = new Set(['node', 'import', 'default']);

/**
 * Picks the target of a conditional export the way Node does: object keys in their own order, the first
 * key that is one of our conditions and yields a target wins; arrays give their first usable entry.
 */
function pickCondition(target: unknown): string | undefined {
  if (typeof target === 'string') return target;
  if (Array.isArray(target)) {
    for (const t of target) {
      const r = pickCondition(t);
      if (r) return r;
    }
    return undefined;
  }
  if (target && typeof target === 'object') {
    for (const [key, value] of Object.entries(target as Record<string, unknown>)) {
      if (!IMPORT_CONDITIONS.has(key)) continue;
      const r = pickCondition(value);
      if (r) return r;
    }
  }
  return undefined;
}

/** The entry file of a package for `import` (the "." export, else module/main, else index.js). */
export function packageEntry(root: string, pkg: PackageJson): string {
  const ex = pkg.exports;
  let rel: string | undefined;
  if (ex !== undefined) {
    const dot = typeof ex === 'object' && ex !== null && !Array.isArray(ex) && Object.keys(ex).some((k) => k.startsWith('.'))
      ? (ex as Record<string, unknown>)['.']
      : ex;
    rel = pickCondition(dot);
  }
  rel ??= pkg.module ?? pkg.main ?? 'index.js';
  return path.join(root, rel);
}

/** The list of plugin specifiers for a host, and where it came from. */
export async function discoverPlugins(hostRoot: string, explicit?: string[]): Promise<{ specs: string[]; source: PluginReport['source'] }> {
  if (explicit) return { specs: explicit, source: 'option' };
  let host: PackageJson;
  try {
    host = await readPackageJson(path.join(hostRoot, 'package.json'));
  } catch {
    return { specs: [], source: 'none' };
  }
  const listed = host[MANIFEST_FIELD]?.plugins;
  if (Array.isArray(listed)) return { specs: listed.map(String), source: 'host-package' };
  const deps = Object.keys({ ...(host.dependencies ?? {}), ...(host.optionalDependencies ?? {}) });
  const specs: string[] = [];
  for (const d of deps) {
    const root = await findPackageRoot(d, hostRoot);
    if (!root) continue;
    try {
      const pkg = await readPackageJson(path.join(root, 'package.json'));
      if (pkg[MANIFEST_FIELD]?.plugin === true) specs.push(d);
    } catch {
      // unreadable dependency: not ours to report
    }
  }
  return { specs, source: specs.length ? 'dependencies' : 'none' };
}

/** Checks the shape of a manifest object; returns a reason when it is unusable. */
function manifestProblem(m: unknown): string | undefined {
  if (!m || typeof m !== 'object') return 'the entry module exports no manifest (export default definePlugin({...}))';
  const o = m as Record<string, unknown>;
  if (typeof o['name'] !== 'string') return 'manifest.name must be a string';
  if (typeof o['apiVersion'] !== 'number') return 'manifest.apiVersion must be a number';
  if (o['apiVersion'] !== PLUGIN_API_VERSION) {
    return `manifest apiVersion ${String(o['apiVersion'])} is not supported (this core implements apiVersion ${PLUGIN_API_VERSION})`;
  }
  for (const k of ['modalities', 'loaders', 'languageModels']) {
    if (o[k] !== undefined && (!Array.isArray(o[k]) || !(o[k] as unknown[]).every((c) => typeof c === 'function'))) {
      return `manifest.${k} must be an array of classes`;
    }
  }
  return undefined;
}

/** Resolves, validates and imports one plugin package. Throws {@link PluginLoadError}. */
export async function importPlugin(
  spec: string,
  hostRoot: string,
): Promise<{ manifest: PluginManifest; name: string; version?: string; root: string }> {
  const root = await findPackageRoot(spec, hostRoot);
  if (!root) {
    throw new PluginLoadError(spec, undefined, 'resolve', `cannot find the package from ${hostRoot}`, {
      suggestions: [`npm install ${spec}`],
    });
  }
  let pkg: PackageJson;
  try {
    pkg = await readPackageJson(path.join(root, 'package.json'));
  } catch (e) {
    throw new PluginLoadError(spec, undefined, 'manifest', `unreadable package.json: ${(e as Error).message}`, { cause: e });
  }
  const name = pkg.name ?? spec;
  const field = pkg[MANIFEST_FIELD];
  if (!field || field.plugin !== true) {
    throw new PluginLoadError(name, pkg.version, 'manifest', `package.json has no "${MANIFEST_FIELD}": { "plugin": true } field`);
  }
  if (field.apiVersion !== PLUGIN_API_VERSION) {
    throw new PluginLoadError(
      name, pkg.version, 'validate',
      `declares apiVersion ${JSON.stringify(field.apiVersion)}, but this core implements apiVersion ${PLUGIN_API_VERSION}`,
      { suggestions: ['Install a version of the plugin built for this core, or upgrade @multimeditron/core.'] },
    );
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(packageEntry(root, pkg)).href)) as Record<string, unknown>;
  } catch (e) {
    throw new PluginLoadError(name, pkg.version, 'import', (e as Error)?.message ?? String(e), { cause: e });
  }
  const manifest = (mod['default'] ?? mod['plugin']) as PluginManifest | undefined;
  const problem = manifestProblem(manifest);
  if (problem) throw new PluginLoadError(name, pkg.version, 'validate', problem);
  return { manifest: manifest!, name, version: pkg.version, root };
}

/** Validates an in-memory manifest (a plugin object passed directly by the host). */
export function checkManifest(manifest: PluginManifest): void {
  const problem = manifestProblem(manifest);
  if (problem) {
    throw new PluginLoadError((manifest as { name?: string })?.name ?? '<inline plugin>', manifest?.version, 'validate', problem);
  }
}

/** Wraps anything thrown while loading into a PluginLoadError. */
export function asPluginError(spec: string, e: unknown, phase: PluginLoadError['phase'] = 'register'): PluginLoadError {
  if (e instanceof PluginLoadError) return e;
  const msg = e instanceof MultimeditronError || e instanceof Error ? e.message : String(e);
  return new PluginLoadError(spec, undefined, phase, msg, { cause: e });
}
