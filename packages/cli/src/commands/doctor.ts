/** `multimeditron doctor`: backend and why, tfjs version, plugins and their load errors. */
import type { Command } from 'commander';
import { createRequire } from 'node:module';
import { PLUGIN_API_VERSION } from '@multimeditron/core';
import { createHost, type HostOptions } from '../host.js';
import { EXIT_FAILURES, EXIT_OK } from '../errors.js';

interface DoctorOptions extends HostOptions {
  json?: boolean;
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('report the tfjs backend (and why it was chosen), versions, plugins and their load errors; exits 1 if something is broken')
    .option('--plugins <list>', 'comma-separated plugin packages or paths (default: discovered)')
    .option('--backend <name>', 'tensorflow | wasm | cpu (default: MULTIMEDITRON_BACKEND, else automatic)')
    .option('--json', 'print the report as JSON')
    .action(async (opts: DoctorOptions) => {
      const { mm, from } = await createHost(opts);
      const req = createRequire(import.meta.url);
      const version = (p: string) => {
        try {
          return (req(`${p}/package.json`) as { version: string }).version;
        } catch {
          return undefined;
        }
      };
      const report = {
        node: process.version,
        platform: `${process.platform}-${process.arch}`,
        core: version('@multimeditron/core'),
        pluginApiVersion: PLUGIN_API_VERSION,
        backend: mm.backend,
        plugins: {
          from,
          loaded: mm.plugins.loaded.map((p) => ({ name: p.name, version: p.version, modalities: p.modalities, loaders: p.loaders })),
          errors: mm.plugins.errors.map((e) => ({ plugin: e.plugin, version: e.version, phase: e.phase, message: e.message })),
        },
        duplicates: mm.duplicates.map((d) => d.message),
      };
      const broken = report.plugins.errors.length > 0 || report.duplicates.length > 0 || !mm.backend;
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ ...report, ok: !broken }, null, 2)}\n`);
      } else {
        const out: string[] = [];
        out.push(`node        ${report.node} (${report.platform})`);
        out.push(`core        @multimeditron/core ${report.core ?? '?'} (plugin apiVersion ${PLUGIN_API_VERSION})`);
        out.push(`tfjs        @tensorflow/tfjs-core ${mm.backend?.tfjsVersion ?? '?'}`);
        out.push(`backend     ${mm.backend?.backend ?? 'none'} via ${mm.backend?.package ?? '-'}`);
        out.push(`  why       ${mm.backend?.reason ?? '-'}`);
        for (const a of mm.backend?.attempts ?? []) out.push(`  tried     ${a.package}: ${a.ok ? 'ok' : a.error}`);
        out.push(`plugins     from ${from}`);
        for (const p of report.plugins.loaded) {
          out.push(`  ok        ${p.name}@${p.version ?? '?'}  modalities: ${p.modalities.join(', ') || '-'}  loaders: ${p.loaders.join(', ') || '-'}`);
        }
        for (const e of report.plugins.errors) out.push(`  FAILED    ${e.plugin}@${e.version ?? '?'} [${e.phase}] ${e.message}`);
        if (!report.plugins.loaded.length && !report.plugins.errors.length) out.push('  (none)');
        for (const d of report.duplicates) out.push(`DUPLICATE   ${d}`);
        out.push(broken ? 'status      PROBLEMS FOUND' : 'status      ok');
        process.stdout.write(`${out.join('\n')}\n`);
      }
      process.exitCode = broken ? EXIT_FAILURES : EXIT_OK;
    });
}
