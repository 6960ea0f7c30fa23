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
import {
  getLoaderRegistration, getModalityRegistration, LoaderRegistry, ModalityRegistry,
  type LoaderRegistration, type ModalityRegistration,
} from './registry.js';
import { DuplicateRegistrationError, MultimeditronError, PluginLoadError } from './errors.js';
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
  /**
   * Backend to activate; `false` leaves the current tfjs backend alone. Default: automatic selection (see
   * {@link selectBackend}). The tfjs backend is process-wide: the last instance to select one wins.
   */
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
  /**
   * Registers decorated modality or loader classes directly in this instance only (source `host`). Throws
   * {@link DuplicateRegistrationError} when a name is taken, and a `MultimeditronError` (`E_REGISTRATION`)
   * for an undecorated class.
   */
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

  const registerManifest = (manifest: PluginManifest, source: string, version: string | undefined) => {
    const modClasses = manifest.modalities ?? [];
    const loadClasses = manifest.loaders ?? [];
    const mods = modClasses.map((c) => getModalityRegistration(c));
    const loads = loadClasses.map((c) => getLoaderRegistration(c));
    const missing = [
      ...modClasses.filter((_, i) => !mods[i]).map((c) => `${c.name} (listed in modalities, not decorated with @RegisterModality)`),
      ...loadClasses.filter((_, i) => !loads[i]).map((c) => `${c.name} (listed in loaders, not decorated with @RegisterLoader)`),
    ];
    if (missing.length) {
      throw new PluginLoadError(source, version, 'register', `undecorated classes: ${missing.join(', ')}`, {
        suggestions: ['Decorate each listed class, or call the decorator directly: RegisterModality(name, {...})(MyClass).'],
      });
    }
    // Check every name first (against the registries and within the manifest) so that a failing plugin
    // registers nothing. The very same registration twice (one class re-exported) is not a clash.
    const check = <R extends { name: string }>(regs: R[], registry: { has(n: string): boolean; get(n: string): R; sourceOf(n: string): string | undefined }, kind: 'modality' | 'loader') => {
      const seen = new Map<string, R>();
      for (const r of regs) {
        const prev = seen.get(r.name) ?? (registry.has(r.name) ? registry.get(r.name) : undefined);
        if (prev && prev !== r) {
          throw new DuplicateRegistrationError(kind, r.name, seen.has(r.name) ? source : registry.sourceOf(r.name)!, source);
        }
        seen.set(r.name, r);
      }
    };
    check(mods as ModalityRegistration[], modalityRegistry, 'modality');
    check(loads as LoaderRegistration[], loaderRegistry, 'loader');
    for (const r of mods) modalityRegistry.add(r!, source);
    for (const r of loads) loaderRegistry.add(r!, source);
    return { modalities: [...new Set(mods.map((r) => r!.name))], loaders: [...new Set(loads.map((r) => r!.name))] };
  };

  const report: PluginReport = { source: 'none', loaded: [], errors: [] };
  const explicit = options.plugins;
  const specs = explicit ? { specs: explicit, source: 'option' as const } : await discoverPlugins(hostRoot);
  report.source = specs.source;
  for (const spec of [...new Set(specs.specs)]) {
    const label = typeof spec === 'string' ? spec : (spec as PluginManifest)?.name ?? '<inline plugin>';
    try {
      let manifest: PluginManifest;
      let name: string;
      let version: string | undefined;
      let root: string | undefined;
      if (typeof spec === 'string') {
        // the package.json's name and version win over the manifest's
        ({ manifest, name, version, root } = await importPlugin(spec, hostRoot));
      } else {
        checkManifest(spec);
        manifest = spec;
        name = spec.name;
        version = spec.version;
      }
      let names: { modalities: string[]; loaders: string[] };
      try {
        names = registerManifest(manifest, name, version);
      } catch (e) {
        if (e instanceof PluginLoadError) throw e;
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
        else if (getLoaderRegistration(c)) loaderRegistry.addClass(c, 'host');
        else {
          throw new MultimeditronError(
            'E_REGISTRATION',
            `${(c as { name?: string })?.name ?? String(c)} is decorated with neither @RegisterModality nor @RegisterLoader`,
          );
        }
      }
    },
  };
}
