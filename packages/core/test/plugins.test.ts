import 'reflect-metadata';
import path from 'node:path';
import {
  BaseModality, createMultimeditron, definePlugin, discoverPlugins, DuplicateRegistrationError, importPlugin, packageEntry,
  PLUGIN_API_VERSION, PluginLoadError, type Logger, type PluginReport,
} from '@multimeditron/core';
import { linkPackage, makeSandbox, pluginPackage, writePackage, writeToyPlugin } from './helpers/plugin-packages.js';
import { DenseModality, DenseProcessor, configClass } from './helpers/toy.js';

/**
 * The sandbox:
 *
 *   <root>/node_modules/@tensorflow/tfjs-core -> the repository's copy
 *   <root>/linked/                               @acme/mm-plugin-linked (symlinked into the host)
 *   <root>/host/package.json                     dependencies: every package below
 *   <root>/host/node_modules/mm-plugin-toy       loads (entry through an "exports" map)
 *   <root>/host/node_modules/@acme/mm-plugin-linked -> ../../../linked   loads
 *   <root>/host/node_modules/not-a-plugin        ordinary dependency: ignored
 *   <root>/host/node_modules/mm-plugin-throws    throws at import
 *   <root>/host/node_modules/mm-plugin-future    apiVersion 2 in package.json
 *   <root>/host/node_modules/mm-plugin-clash     registers "toy" again
 *   <root>/host/node_modules/mm-plugin-undecorated  lists a class without @RegisterModality
 *   <root>/host/node_modules/mm-plugin-empty     exports no manifest
 *   <root>/host/node_modules/mm-plugin-manifest2 package.json says apiVersion 1, its manifest says 2
 *   <root>/host/local-plugin/                    a plugin given by relative path
 *   <root>/host/listing/package.json             a host that lists its plugins explicitly
 */
let sandbox: Awaited<ReturnType<typeof makeSandbox>>;
let host: string;

/** Collects what the instance logs, instead of writing to stderr. */
function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const push = (lvl: string) => (m: string) => void lines.push(`${lvl}: ${m}`);
  return { lines, debug: push('debug'), info: push('info'), warn: push('warn'), error: push('error') };
}

beforeAll(async () => {
  sandbox = await makeSandbox('mm-plugins-');
  host = path.join(sandbox.root, 'host');
  const nm = path.join(host, 'node_modules');
  await writeToyPlugin(path.join(nm, 'mm-plugin-toy'), { plugin: 'mm-plugin-toy', version: '1.2.3', name: 'toy', type: 'toy', exportsMap: true });
  await writeToyPlugin(path.join(sandbox.root, 'linked'), { plugin: '@acme/mm-plugin-linked', version: '0.4.0', name: 'linked_toy', type: 'linked' });
  await linkPackage(host, '@acme/mm-plugin-linked', path.join(sandbox.root, 'linked'));
  await writePackage(path.join(nm, 'not-a-plugin'), { name: 'not-a-plugin', version: '9.9.9', type: 'module', main: 'index.js' }, {
    'index.js': 'throw new Error("an ordinary dependency must never be imported by discovery");\n',
  });
  await writePackage(path.join(nm, 'mm-plugin-throws'), pluginPackage('mm-plugin-throws', '0.0.1'), {
    'index.js': 'export default { name: "mm-plugin-throws", apiVersion: 1 };\nthrow new TypeError("boom at import");\n',
  });
  await writePackage(path.join(nm, 'mm-plugin-future'), { ...pluginPackage('mm-plugin-future', '3.0.0'), multimeditron: { plugin: true, apiVersion: 2 } }, {
    'index.js': 'throw new Error("an incompatible plugin must not be imported");\n',
  });
  await writeToyPlugin(path.join(nm, 'mm-plugin-clash'), { plugin: 'mm-plugin-clash', version: '0.9.0', name: 'toy', type: 'toy' });
  await writePackage(path.join(nm, 'mm-plugin-undecorated'), pluginPackage('mm-plugin-undecorated', '0.1.0'), {
    'index.js': [
      "import { BaseModality, BaseModalityLoader, definePlugin } from '@multimeditron/core';",
      'export class Forgotten extends BaseModality {}',
      'export class ForgottenLoader extends BaseModalityLoader {}',
      "export default definePlugin({ name: 'mm-plugin-undecorated', apiVersion: 1, modalities: [Forgotten], loaders: [ForgottenLoader] });",
      '',
    ].join('\n'),
  });
  await writePackage(path.join(nm, 'mm-plugin-empty'), pluginPackage('mm-plugin-empty', '0.1.0'), { 'index.js': 'export const nothing = 1;\n' });
  await writePackage(path.join(nm, 'mm-plugin-manifest2'), pluginPackage('mm-plugin-manifest2', '0.1.0'), {
    'index.js': "export default { name: 'mm-plugin-manifest2', apiVersion: 2, modalities: [] };\n",
  });
  await writeToyPlugin(path.join(host, 'local-plugin'), { plugin: 'local-plugin', version: '0.0.0', name: 'local_toy', type: 'local' });
  await writePackage(host, {
    name: 'host-app', version: '1.0.0', type: 'module',
    dependencies: {
      'mm-plugin-toy': '^1.2.3', '@acme/mm-plugin-linked': '^0.4.0', 'not-a-plugin': '^9', 'mm-plugin-throws': '*',
      'mm-plugin-uninstalled': '*',
    },
    optionalDependencies: { 'mm-plugin-future': '*', 'mm-plugin-clash': '*' },
  });
  await writePackage(path.join(host, 'listing'), {
    name: 'listing-host', version: '1.0.0', type: 'module',
    dependencies: { '@acme/mm-plugin-linked': '*' },
    multimeditron: { plugins: ['mm-plugin-toy', '../local-plugin'] },
  });
});

afterAll(async () => {
  await sandbox.cleanup();
});

function byPlugin(report: PluginReport): Record<string, PluginLoadError> {
  return Object.fromEntries(report.errors.map((e) => [e.plugin, e]));
}

describe('discovery', () => {
  test('without a list: the host\'s dependencies whose package.json carries the field, resolved from the host root', async () => {
    const found = await discoverPlugins(host);
    expect(found.source).toBe('dependencies');
    // dependency order; not-a-plugin is skipped without being imported; an uninstalled dependency cannot be known
    expect(found.specs).toEqual(['mm-plugin-toy', '@acme/mm-plugin-linked', 'mm-plugin-throws', 'mm-plugin-future', 'mm-plugin-clash']);
  });

  test('a host package.json list wins over its dependencies; an explicit list wins over both', async () => {
    expect(await discoverPlugins(path.join(host, 'listing'))).toEqual({ specs: ['mm-plugin-toy', '../local-plugin'], source: 'host-package' });
    expect(await discoverPlugins(host, ['x'])).toEqual({ specs: ['x'], source: 'option' });
    expect(await discoverPlugins(path.join(sandbox.root, 'no-such-host'))).toEqual({ specs: [], source: 'none' });
  });

  test('package entries follow the exports map conditions in Node\'s order', () => {
    const root = '/p';
    expect(packageEntry(root, { exports: { '.': { types: './t.d.ts', import: './i.js', require: './r.cjs' } } })).toBe('/p/i.js');
    expect(packageEntry(root, { exports: { '.': { require: './r.cjs', default: './d.js', import: './i.js' } } })).toBe('/p/d.js');
    expect(packageEntry(root, { exports: { node: { import: './n.js' }, default: './d.js' } })).toBe('/p/n.js');
    expect(packageEntry(root, { exports: './e.js' })).toBe('/p/e.js');
    expect(packageEntry(root, { main: 'lib/m.js' })).toBe('/p/lib/m.js');
    expect(packageEntry(root, {})).toBe('/p/index.js');
  });

  test('importPlugin resolves a symlinked scoped package to its real folder and reads its name and version', async () => {
    const p = await importPlugin('@acme/mm-plugin-linked', host);
    expect(p.root).toBe(path.join(sandbox.root, 'linked'));
    expect(p.name).toBe('@acme/mm-plugin-linked');
    expect(p.version).toBe('0.4.0');
    expect(p.manifest.apiVersion).toBe(PLUGIN_API_VERSION);
  });
});

describe('loading discovered plugins: failures are reported and the host keeps running', () => {
  let mm: Awaited<ReturnType<typeof createMultimeditron>>;
  let logger: ReturnType<typeof memoryLogger>;
  beforeAll(async () => {
    logger = memoryLogger();
    mm = await createMultimeditron({ hostRoot: host, backend: 'wasm', logger });
  });

  test('the good plugins load, with their names, versions and registrations', () => {
    expect(mm.plugins.source).toBe('dependencies');
    expect(mm.plugins.loaded.map((p) => ({ name: p.name, version: p.version, modalities: p.modalities, loaders: p.loaders }))).toEqual([
      { name: 'mm-plugin-toy', version: '1.2.3', modalities: ['toy'], loaders: ['fs-toy'] },
      { name: '@acme/mm-plugin-linked', version: '0.4.0', modalities: ['linked_toy'], loaders: ['fs-linked'] },
    ]);
    expect(mm.plugins.loaded[0]!.root).toBe(path.join(host, 'node_modules', 'mm-plugin-toy'));
    expect(mm.modalities.names()).toEqual(['linked_toy', 'toy']);
    expect(mm.modalityRegistry.sourceOf('toy')).toBe('mm-plugin-toy');
  });

  test('a plugin that throws at import: phase "import", its version, and the thrown error as cause', () => {
    const e = byPlugin(mm.plugins)['mm-plugin-throws']!;
    expect(e).toBeInstanceOf(PluginLoadError);
    expect(e.code).toBe('E_PLUGIN');
    expect(e.version).toBe('0.0.1');
    expect(e.phase).toBe('import');
    expect(e.cause).toBeInstanceOf(TypeError);
    expect((e.cause as Error).message).toBe('boom at import');
    expect(e.message).toBe('Plugin mm-plugin-throws@0.0.1 failed at import: boom at import');
  });

  test('an apiVersion mismatch: phase "validate", and the plugin is never imported', () => {
    const e = byPlugin(mm.plugins)['mm-plugin-future']!;
    expect(e.phase).toBe('validate');
    expect(e.version).toBe('3.0.0');
    expect(e.message).toContain(`declares apiVersion 2, but this core implements apiVersion ${PLUGIN_API_VERSION}`);
    expect(e.suggestions.length).toBeGreaterThan(0);
  });

  test('two plugins registering the same name: the second fails at "register" and registers nothing', () => {
    const e = byPlugin(mm.plugins)['mm-plugin-clash']!;
    expect(e.phase).toBe('register');
    expect(e.version).toBe('0.9.0');
    expect(e.cause).toBeInstanceOf(DuplicateRegistrationError);
    expect(e.message).toContain('modality "toy" is registered twice: by mm-plugin-toy and by mm-plugin-clash');
    // its loader name was free, but a failing plugin registers nothing at all
    expect(mm.loaders.names()).toEqual(['fs-linked', 'fs-toy']);
    expect(mm.loaderRegistry.sourceOf('fs-toy')).toBe('mm-plugin-toy');
  });

  test('exactly these three failures, each also logged as a warning', () => {
    expect(mm.plugins.errors.map((e) => [e.plugin, e.phase])).toEqual([
      ['mm-plugin-throws', 'import'], ['mm-plugin-future', 'validate'], ['mm-plugin-clash', 'register'],
    ]);
    expect(logger.lines.filter((l) => l.startsWith('warn: Plugin '))).toHaveLength(3);
  });

  test('the host keeps running: the loaded plugin\'s modality is built from core\'s own classes', async () => {
    const m = await mm.modalities.fromConfig({ modelType: 'toy', hiddenSize: 3 });
    expect(m).toBeInstanceOf(BaseModality);
    m.dispose();
  });
});

describe('explicit lists, paths and strict mode', () => {
  test('a missing plugin: phase "resolve", no version, an install hint', async () => {
    const mm = await createMultimeditron({ hostRoot: host, backend: false, plugins: ['mm-plugin-missing', 'mm-plugin-toy'], logger: memoryLogger() });
    const e = mm.plugins.errors[0]!;
    expect(e.plugin).toBe('mm-plugin-missing');
    expect(e.version).toBeUndefined();
    expect(e.phase).toBe('resolve');
    expect(e.message).toContain(`cannot find the package from ${host}`);
    expect(e.suggestions).toEqual(['npm install mm-plugin-missing']);
    expect(mm.plugins.loaded.map((p) => p.name)).toEqual(['mm-plugin-toy']);
  });

  test('strict mode throws the first PluginLoadError instead of reporting it', async () => {
    const err = await createMultimeditron({ hostRoot: host, backend: false, strict: true, plugins: ['mm-plugin-toy', 'mm-plugin-throws'] })
      .then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(PluginLoadError);
    expect(err.plugin).toBe('mm-plugin-throws');
    expect(err.phase).toBe('import');
    await expect(createMultimeditron({ hostRoot: host, backend: false, strict: true, plugins: ['nope'] })).rejects.toMatchObject({ phase: 'resolve' });
  });

  test('a manifest that lists undecorated classes fails at "register", naming each class', async () => {
    const mm = await createMultimeditron({ hostRoot: host, backend: false, plugins: ['mm-plugin-undecorated'], logger: memoryLogger() });
    const e = mm.plugins.errors[0]!;
    expect([e.plugin, e.version, e.phase]).toEqual(['mm-plugin-undecorated', '0.1.0', 'register']);
    expect(e.message).toContain('Forgotten (listed in modalities, not decorated with @RegisterModality)');
    expect(e.message).toContain('ForgottenLoader (listed in loaders, not decorated with @RegisterLoader)');
    expect(e.message.match(/failed at register/g)).toHaveLength(1);
  });

  test('an entry without a manifest, and a manifest with another apiVersion, fail at "validate"', async () => {
    const mm = await createMultimeditron({ hostRoot: host, backend: false, plugins: ['mm-plugin-empty', 'mm-plugin-manifest2'], logger: memoryLogger() });
    const errs = byPlugin(mm.plugins);
    expect(errs['mm-plugin-empty']!.phase).toBe('validate');
    expect(errs['mm-plugin-empty']!.message).toContain('exports no manifest');
    expect(errs['mm-plugin-manifest2']!.phase).toBe('validate');
    expect(errs['mm-plugin-manifest2']!.message).toContain('manifest apiVersion 2 is not supported');
  });

  test('a package that is not a plugin, listed explicitly, fails at "manifest"', async () => {
    const mm = await createMultimeditron({ hostRoot: host, backend: false, plugins: ['not-a-plugin'], logger: memoryLogger() });
    expect(mm.plugins.errors.map((e) => [e.plugin, e.version, e.phase])).toEqual([['not-a-plugin', '9.9.9', 'manifest']]);
  });

  test('a host package.json list loads plugins by name and by relative path', async () => {
    const mm = await createMultimeditron({ hostRoot: path.join(host, 'listing'), backend: false, logger: memoryLogger() });
    expect(mm.plugins.source).toBe('host-package');
    expect(mm.plugins.errors).toEqual([]);
    expect(mm.plugins.loaded.map((p) => [p.name, p.root])).toEqual([
      ['mm-plugin-toy', path.join(host, 'node_modules', 'mm-plugin-toy')],
      ['local-plugin', path.join(host, 'local-plugin')],
    ]);
    // listed plugins only: the linked dependency is not loaded
    expect(mm.modalities.names()).toEqual(['local_toy', 'toy']);
  });

  test('the same plugin listed twice loads once', async () => {
    const mm = await createMultimeditron({ hostRoot: host, backend: false, plugins: ['mm-plugin-toy', 'mm-plugin-toy'] });
    expect(mm.plugins.loaded).toHaveLength(1);
    expect(mm.plugins.errors).toEqual([]);
  });
});

describe('inline manifests', () => {
  const InlineConfig = configClass('inline', 'inline');
  class InlineModality extends DenseModality {}

  test('an inline manifest object registers its decorated classes under its own name', async () => {
    const { RegisterModality } = await import('@multimeditron/core');
    RegisterModality('inline', { config: InlineConfig, processor: DenseProcessor })(InlineModality);
    const mm = await createMultimeditron({ backend: false, plugins: [definePlugin({ name: 'inline-plugin', version: '0.0.1', apiVersion: 1, modalities: [InlineModality] })] });
    expect(mm.plugins.loaded.map((p) => [p.name, p.version, p.root, p.modalities])).toEqual([['inline-plugin', '0.0.1', undefined, ['inline']]]);
    expect(mm.modalityRegistry.sourceOf('inline')).toBe('inline-plugin');
  });

  test('bad inline manifests are reported at "validate" or "register" with their name', async () => {
    class Undecorated extends DenseModality {}
    const mm = await createMultimeditron({
      backend: false,
      logger: memoryLogger(),
      plugins: [
        { name: 'future-inline', apiVersion: 99 },
        { name: 'bad-list', apiVersion: 1, modalities: ['not a class' as never] },
        { name: 'undecorated-inline', version: '1.0.0', apiVersion: 1, modalities: [Undecorated] },
        null as never,
      ],
    });
    expect(mm.plugins.errors.map((e) => [e.plugin, e.version, e.phase])).toEqual([
      ['future-inline', undefined, 'validate'],
      ['bad-list', undefined, 'validate'],
      ['undecorated-inline', '1.0.0', 'register'],
      ['<inline plugin>', undefined, 'validate'],
    ]);
    expect(mm.plugins.errors[1]!.message).toContain('manifest.modalities must be an array of classes');
    expect(mm.plugins.loaded).toEqual([]);
  });
});
