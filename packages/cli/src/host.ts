/**
 * How the CLI finds its plugins and builds its instance.
 *
 * `--plugins a,b` wins; else the plugins of the project in the current directory (its package.json's
 * `multimeditron.plugins`, or its dependencies that are plugins); else the plugins the CLI itself depends on
 * (`@multimeditron/plugin-image`, `@multimeditron/plugin-audio`).
 * @module
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMultimeditron, discoverPlugins, type CreateMultimeditronOptions, type Multimeditron } from '@multimeditron/core';

/** The CLI package's own folder. */
export const CLI_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Options shared by every command that builds an instance. */
export interface HostOptions {
  plugins?: string;
  strict?: boolean;
  backend?: string;
}

/** Where the plugin list comes from, and the list. */
export async function pluginSource(opts: HostOptions, cwd = process.cwd()): Promise<{ hostRoot: string; plugins?: string[]; from: string }> {
  if (opts.plugins) {
    return { hostRoot: cwd, plugins: opts.plugins.split(',').map((s) => s.trim()).filter(Boolean), from: '--plugins' };
  }
  const local = await discoverPlugins(cwd);
  if (local.specs.length) return { hostRoot: cwd, plugins: local.specs, from: `${path.join(cwd, 'package.json')} (${local.source})` };
  const own = await discoverPlugins(CLI_ROOT);
  return { hostRoot: CLI_ROOT, plugins: own.specs, from: `the CLI's built-in plugins (${path.join(CLI_ROOT, 'package.json')})` };
}

/** Builds the instance a command works with. */
export async function createHost(opts: HostOptions, extra: Partial<CreateMultimeditronOptions> = {}): Promise<{ mm: Multimeditron; from: string }> {
  const src = await pluginSource(opts);
  const mm = await createMultimeditron({
    hostRoot: src.hostRoot,
    ...(src.plugins ? { plugins: src.plugins } : {}),
    strict: Boolean(opts.strict),
    ...(opts.backend ? { backend: opts.backend as CreateMultimeditronOptions['backend'] } : {}),
    ...extra,
  });
  return { mm, from: src.from };
}
