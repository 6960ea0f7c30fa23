/**
 * `createMultimeditron()`: one isolated instance of the framework: a child DI container, its own
 * registries, the model resolver, the backend and the plugins.
 * @module
 */
import 'reflect-metadata';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import path from 'node:path';
import { AutoModality, AutoModalityLoader } from './auto.js';
import { selectBackend, type BackendChoice, type BackendRequest } from './backend.js';
import { ConsoleLogger, type Logger, type ModalityContext } from './context.js';
import { ModelResolver, type ModelResolverOptions } from './hub.js';
import { asPluginError, checkManifest, discoverPlugins, importPlugin, type PluginManifest, type PluginReport } from './plugins.js';
import { getLoaderRegistration, getModalityRegistration, LoaderRegistry, ModalityRegistry } from './registry.js';
import { DuplicateRegistrationError, PluginLoadError } from './errors.js';
import { detectDuplicateCopies, type DuplicateCopy } from './internal/duplicates.js';

/** Injection tokens of the services every instance registers in its container. */
export const TOKENS = {
  Logger: Symbol.for('multimeditron.Logger'),
  ModelResolver: Symbol.for('multimeditron.ModelResolver'),
  ModalityRegistry: Symbol.for('multimeditron.ModalityRegistry'),
  LoaderRegistry: Symbol.for('multimeditron.LoaderRegistry'),
  Backend: Symbol.for('multimeditron.Backend'),
  AutoModality: Symbol.for('multimeditron.AutoModality'),
  AutoModalityLoader: Symbol.for('multimeditron.AutoModalityLoader'),
  PluginReport: Symbol.for('multimeditron.PluginReport'),
} as const;

/** Options of {@link createMultimeditron}. */
export interface CreateMultimeditronOptions {
  /** Parent container; the instance registers into a child of it. Default: a child of tsyringe's root. */
  container?: DependencyContainer;
  /**
   * Plugins: package names or paths (resolved from `hostRoot`) and/or in-memory manifests. When omitted,
   * plugins are discovered from the host's package.json.
   */
  plugins?: Array<string | PluginManifest>;
  /** Folder whose package.json and node_modules plugins resolve from. Default `process.cwd()`. */
  hostRoot?: string;
  /** Throw on the first plugin error instead of reporting it. */
  strict?: boolean;
  /** Backend to activate; `false` leaves the current tfjs backend alone. Default: automatic selection. */
  backend?: BackendRequest | 'auto' | false;
  /** A resolver, or options for the default one. */
  resolver?: ModelResolver | ModelResolverOptions;
  logger?: Logger;
}

/** A running instance. */
export interface Multimeditron {
  /** The instance's own container (a child of the one passed in). */
  readonly container: DependencyContainer;
  /** Builds modalities from this instance's registry. */
  readonly modalities: AutoModality;
  /** Builds loaders from this instance's registry. */
  readonly loaders: AutoModalityLoader;
  /** Which plugins loaded and which failed. */
  readonly plugins: PluginReport;
  /** The active backend (undefined when `backend: false`). */
  readonly backend: BackendChoice | undefined;
  readonly resolver: ModelResolver;
  readonly logger: Logger;
  readonly modalityRegistry: ModalityRegistry;
  readonly loaderRegistry: LoaderRegistry;
  /** Duplicate copies of tfjs-core / tsyringe / core found in the process, if any. */
  readonly duplicates: DuplicateCopy[];
  /** The context handed to modalities and processors. */
  readonly context: ModalityContext;
  /** Registers decorated modality or loader classes directly (source `host`). */
  register(...classes: unknown[]): void;
}

/** Creates an isolated instance: its own container, registries and plugins. */
export async function createMultimeditron(options: CreateMultimeditronOptions = {}): Promise<Multimeditron> {
  const hostRoot = path.resolve(options.hostRoot ?? process.cwd());
  const container = (options.container ?? rootContainer).createChildContainer();
  const logger = options.logger ?? new ConsoleLogger();
  const resolver = options.resolver instanceof ModelResolver ? options.resolver : new ModelResolver(options.resolver);
  const modalityRegistry = new ModalityRegistry();
  const loaderRegistry = new LoaderRegistry();
  const context: ModalityContext = { resolver, logger };

  const backend =
    options.backend === false
      ? undefined
      : await selectBackend({ ...(options.backend && options.backend !== 'auto' ? { backend: options.backend } : {}), resolveFrom: hostRoot });

  const duplicates = detectDuplicateCopies();
  for (const d of duplicates) logger.warn(d.message);

  const registerManifest = (manifest: PluginManifest, source: string) => {
    const mods = (manifest.modalities ?? []).map((c) => getModalityRegistration(c));
    const loads = (manifest.loaders ?? []).map((c) => getLoaderRegistration(c));
    const missing = [...(manifest.modalities ?? []).filter((_, i) => !mods[i]), ...(manifest.loaders ?? []).filter((_, i) => !loads[i])];
    if (missing.length) {
      throw new PluginLoadError(source, manifest.version, 'register',
        `classes not decorated with @RegisterModality/@RegisterLoader: ${missing.map((c) => c.name).join(', ')}`);
    }
    // check every name first so that a failing plugin registers nothing
    for (const r of mods) {
      if (modalityRegistry.has(r!.name)) {
        throw new DuplicateRegistrationError('modality', r!.name, modalityRegistry.sourceOf(r!.name)!, source);
      }
    }
    for (const r of loads) {
      if (loaderRegistry.has(r!.name)) throw new DuplicateRegistrationError('loader', r!.name, loaderRegistry.sourceOf(r!.name)!, source);
    }
    for (const r of mods) modalityRegistry.add(r!, source);
    for (const r of loads) loaderRegistry.add(r!, source);
    return { modalities: mods.map((r) => r!.name), loaders: loads.map((r) => r!.name) };
  };

  const report: PluginReport = { source: 'none', loaded: [], errors: [] };
  const explicit = options.plugins;
  const specs = explicit ? { specs: explicit, source: 'option' as const } : await discoverPlugins(hostRoot);
  report.source = specs.source;
  for (const spec of specs.specs) {
    const label = typeof spec === 'string' ? spec : (spec as PluginManifest)?.name ?? '<inline plugin>';
    try {
      let manifest: PluginManifest;
      let version: string | undefined;
      let root: string | undefined;
      if (typeof spec === 'string') {
        ({ manifest, version, root } = await importPlugin(spec, hostRoot));
      } else {
        checkManifest(spec);
        manifest = spec;
        version = spec.version;
      }
      const name = manifest.name ?? label;
      let names: { modalities: string[]; loaders: string[] };
      try {
        names = registerManifest(manifest, name);
      } catch (e) {
        throw new PluginLoadError(name, version, 'register', (e as Error).message, { cause: e });
      }
      report.loaded.push({ name, version, root, manifest, ...names });
    } catch (e) {
      const err = asPluginError(label, e);
      if (options.strict) throw err;
      logger.warn(err.message);
      report.errors.push(err);
    }
  }

  const modalities = new AutoModality(modalityRegistry, context);
  const loaders = new AutoModalityLoader(loaderRegistry);
  container.registerInstance(TOKENS.Logger, logger);
  container.registerInstance(TOKENS.ModelResolver, resolver);
  container.registerInstance(TOKENS.ModalityRegistry, modalityRegistry);
  container.registerInstance(TOKENS.LoaderRegistry, loaderRegistry);
  container.registerInstance(TOKENS.AutoModality, modalities);
  container.registerInstance(TOKENS.AutoModalityLoader, loaders);
  container.registerInstance(TOKENS.PluginReport, report);
  if (backend) container.registerInstance(TOKENS.Backend, backend);

  return {
    container,
    modalities,
    loaders,
    plugins: report,
    backend,
    resolver,
    logger,
    modalityRegistry,
    loaderRegistry,
    duplicates,
    context,
    register(...classes: unknown[]) {
      for (const c of classes) {
        if (getModalityRegistration(c)) modalityRegistry.addClass(c, 'host');
        else loaderRegistry.addClass(c, 'host');
      }
    },
  };
}
