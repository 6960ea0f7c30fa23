/** `multimeditron plugins`: the plugins, modalities and loaders this host sees. */
import type { Command } from 'commander';
import { createHost, type HostOptions } from '../host.js';
import { EXIT_FAILURES, EXIT_OK } from '../errors.js';

export function registerPlugins(program: Command): void {
  program
    .command('plugins')
    .description('list the plugins with their modalities and loaders')
    .option('--plugins <list>', 'comma-separated plugin packages or paths (default: discovered)')
    .option('--json', 'print JSON')
    .action(async (opts: HostOptions & { json?: boolean }) => {
      const { mm, from } = await createHost({ ...opts, backend: opts.backend }, { backend: false });
      const modalities = mm.modalityRegistry.all().map((r) => ({
        name: r.name, modalityType: r.modalityType, config: r.config.name, processor: r.processor.name,
        plugin: mm.modalityRegistry.sourceOf(r.name),
      }));
      const loaders = mm.loaderRegistry.all().map((r) => ({ name: r.name, modalityType: r.modalityType, plugin: mm.loaderRegistry.sourceOf(r.name) }));
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ from, modalities, loaders, errors: mm.plugins.errors.map((e) => e.message) }, null, 2)}\n`);
      } else {
        const lines = [`plugins from ${from}`];
        for (const p of mm.plugins.loaded) lines.push(`${p.name}@${p.version ?? '?'}`);
        for (const m of modalities) lines.push(`  modality ${m.name} (type ${m.modalityType}; ${m.config}, ${m.processor}) from ${m.plugin}`);
        for (const l of loaders) lines.push(`  loader   ${l.name} (type ${l.modalityType}) from ${l.plugin}`);
        for (const e of mm.plugins.errors) lines.push(`FAILED ${e.message}`);
        process.stdout.write(`${lines.join('\n')}\n`);
      }
      process.exitCode = mm.plugins.errors.length ? EXIT_FAILURES : EXIT_OK;
    });
}
